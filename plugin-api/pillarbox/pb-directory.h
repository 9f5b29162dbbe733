/* SPDX-License-Identifier: MIT */
/* The core's router (recipient -> mailboxes, remote or reject) and password verification. */
#ifndef PILLARBOX_PB_DIRECTORY_H
#define PILLARBOX_PB_DIRECTORY_H

#include <pillarbox/pb-abi.h>
#include <pillarbox/pb-module.h>

PB_BEGIN_DECLS

/**
 * SECTION:pb-directory
 * @title: Router and authentication
 *
 * The core answers the two questions every protocol module asks of the
 * directory, so that they are answered the same way everywhere:
 *
 * - where does a recipient go? pb_router_resolve() looks the address up in
 *   storage, expands aliases and distribution lists (with loop and size
 *   protection) and answers local mailboxes, remote addresses, or a
 *   rejection with its exact SMTP reply;
 * - is this password right? pb_auth_verify() checks a password against the
 *   stored yescrypt hash on a worker thread (hashing is deliberately slow
 *   and must not stall the loop), in constant time, and takes as long for
 *   an unknown user as for a wrong password.
 */

/**
 * PbRouteKind:
 * @PB_ROUTE_LOCAL: a local domain; delivered to the route's mailboxes and
 *   forwarded to its remote addresses (either list may be empty, not both)
 * @PB_ROUTE_REMOTE: not a local domain: relaying, which the protocol module
 *   allows or refuses ("550 5.7.1 Relaying not allowed")
 * @PB_ROUTE_UNKNOWN: a local domain without such a user, alias or list
 *   ("550 5.1.1 ... User unknown")
 * @PB_ROUTE_LOOP: aliases or lists loop or expand too far ("550 5.4.6")
 * @PB_ROUTE_INVALID: not an address ("501 5.1.3")
 * @PB_ROUTE_TEMPFAIL: the directory could not be read ("451 4.3.0")
 *
 * Where a recipient goes.
 *
 * Since: ABI 1.0
 */
typedef enum {
  PB_ROUTE_LOCAL = 0,
  PB_ROUTE_REMOTE,
  PB_ROUTE_UNKNOWN,
  PB_ROUTE_LOOP,
  PB_ROUTE_INVALID,
  PB_ROUTE_TEMPFAIL
} PbRouteKind;

/**
 * PbRoute:
 * @struct_size: sizeof (PbRoute)
 * @kind: the answer
 * @address: the address as resolved (domain in lower case, domain aliases applied)
 * @mailboxes: %NULL-terminated local mailboxes (user names), without duplicates
 * @remote: %NULL-terminated remote addresses an alias or list forwards to
 * @code: the SMTP reply code for a refusal (0 for LOCAL and REMOTE)
 * @enhanced: (nullable): its RFC 3463 code
 * @text: (nullable): its text
 *
 * The router's answer (read only; valid during the callback).
 *
 * Since: ABI 1.0
 */
typedef struct {
  gsize struct_size;
  PbRouteKind kind;
  const char *address;
  const char *const *mailboxes;
  const char *const *remote;
  guint code;
  const char *enhanced;
  const char *text;
} PbRoute;

/**
 * PbRouteFunc:
 * @route: the answer
 * @user_data: as given
 *
 * The end of pb_router_resolve(), on the loop thread, never from inside the call.
 *
 * Since: ABI 1.0
 */
typedef void (*PbRouteFunc) (const PbRoute *route, gpointer user_data);

/**
 * pb_router_resolve:
 * @module: the calling module
 * @address: a forward path without angle brackets ("bob@example.org"), or a
 *   bare "postmaster" (RFC 5321 §4.5.1)
 * @done: called once with the answer
 * @user_data: passed to @done
 *
 * Resolves a recipient. Mail to postmaster at any local domain is always
 * accepted (RFC 5321 §4.5.1): when no user, alias or list of that name
 * exists it goes to the user named by `core.postmaster`.
 *
 * Since: ABI 1.0
 */
PB_API void pb_router_resolve (PbModule *module, const char *address, PbRouteFunc done, gpointer user_data);

/**
 * PbAuthResult:
 * @PB_AUTH_OK: the password is right and the user may use the protocol
 * @PB_AUTH_FAILED: unknown user, wrong password, or protocol not permitted
 *   (indistinguishable to the client, on purpose)
 * @PB_AUTH_TEMPFAIL: the directory could not be read; try again later
 *
 * The outcome of a login.
 *
 * Since: ABI 1.0
 */
typedef enum {
  PB_AUTH_OK = 0,
  PB_AUTH_FAILED,
  PB_AUTH_TEMPFAIL
} PbAuthResult;

/**
 * PbAuthFunc:
 * @result: the outcome
 * @user: (nullable): the user's canonical name on success (the mailbox name)
 * @reason: (nullable): for logs only, never for the client: why it failed
 * @user_data: as given
 *
 * The end of pb_auth_verify(), on the loop thread, never from inside the call.
 *
 * Since: ABI 1.0
 */
typedef void (*PbAuthFunc) (PbAuthResult result, const char *user, const char *reason, gpointer user_data);

/**
 * pb_auth_verify:
 * @module: the calling module
 * @user: the login name ("bob", or "bob@example.org")
 * @password: the password (copied and wiped after use; never logged)
 * @protocol: (nullable): the protocol asking ("smtp", "pop3"), checked
 *   against the user's permitted protocols; %NULL (since ABI 1.1) checks
 *   the password only, for a service that keeps its own list of who may
 *   use it (the status monitor's administrators)
 * @done: called once with the outcome
 * @user_data: passed to @done
 *
 * Checks a login.
 *
 * Since: ABI 1.0
 */
PB_API void pb_auth_verify (PbModule *module, const char *user, const char *password, const char *protocol,
                            PbAuthFunc done, gpointer user_data);

PB_END_DECLS

#endif /* PILLARBOX_PB_DIRECTORY_H */
