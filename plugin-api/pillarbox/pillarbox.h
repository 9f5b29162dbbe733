/* SPDX-License-Identifier: MIT */
/* The whole Pillarbox plugin ABI: the one header a module needs to include. */
#ifndef PILLARBOX_PILLARBOX_H
#define PILLARBOX_PILLARBOX_H

#include <pillarbox/pb-abi.h>
#include <pillarbox/pb-settings.h>
#include <pillarbox/pb-module.h>
#include <pillarbox/pb-conn.h>
#include <pillarbox/pb-session.h>
#include <pillarbox/pb-hooks.h>
#include <pillarbox/pb-control.h>
#include <pillarbox/pb-storage.h>
#include <pillarbox/pb-directory.h>
#include <pillarbox/pb-dns.h>
#include <pillarbox/pb-transport.h>
#include <pillarbox/pb-log.h>
#include <pillarbox/pb-loop.h>

#endif /* PILLARBOX_PILLARBOX_H */
