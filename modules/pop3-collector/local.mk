# SPDX-License-Identifier: MIT
# pop3-collector: (being written)
