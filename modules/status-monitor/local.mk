# SPDX-License-Identifier: MIT
# status-monitor: (being written)
