# SPDX-License-Identifier: MIT
# batv: (being written)
