# SPDX-License-Identifier: MIT
# metrics: (being written)
