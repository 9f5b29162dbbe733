# SPDX-License-Identifier: MIT
# spf: (being written)
