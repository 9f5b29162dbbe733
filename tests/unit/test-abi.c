/* SPDX-License-Identifier: MIT */
/* Records the plugin ABI: struct sizes, field offsets and enum values that must never change within a major. */
#include "config.h"
#include "test-help.h"

/*
 * If one of these fails, the ABI changed. Appending a field to a sized
 * struct is allowed in a new minor: bump PB_ABI_MINOR and update the size
 * here. Anything else (reordering, removing, resizing, renumbering) breaks
 * modules already built and needs a new major.
 *
 * The figures are for LP64 (x86_64, aarch64); elsewhere only the relative
 * checks run.
 */

#define OFFSET(type, field) ((size_t) G_STRUCT_OFFSET (type, field))

static void
test_sizes_lp64 (void **state)
{
  if (sizeof (void *) != 8 || sizeof (long) != 8)
    skip ();
  assert_int_equal (sizeof (PbModuleInfo), 104);
  assert_int_equal (sizeof (PbSetting), 64);
  assert_int_equal (sizeof (PbSectionInfo), 48);
  assert_int_equal (sizeof (PbListenerSpec), 72);
  assert_int_equal (sizeof (PbHookSpec), 48);
  assert_int_equal (sizeof (PbVerdict), 40);
  assert_int_equal (sizeof (PbConnHandlers), 32);
  assert_int_equal (sizeof (PbControlCommandSpec), 64);
  assert_int_equal (sizeof (PbStorageSpec), 72);
  assert_int_equal (sizeof (PbEnvelope), 80);
  assert_int_equal (sizeof (PbRecipient), 48);
  assert_int_equal (sizeof (PbTransportSpec), 48);
  assert_int_equal (sizeof (PbCollectorSpec), 32);
}

static void
test_descriptor_layout (void **state)
{
  /* The loader reads these before it trusts anything else. */
  assert_int_equal (OFFSET (PbModuleInfo, magic), 0);
  assert_int_equal (OFFSET (PbModuleInfo, abi_major), 4);
  assert_int_equal (OFFSET (PbModuleInfo, abi_minor), 6);
  assert_int_equal (OFFSET (PbModuleInfo, struct_size), 8);
  assert_true (OFFSET (PbModuleInfo, name) < OFFSET (PbModuleInfo, init));
  assert_true (OFFSET (PbModuleInfo, init) < OFFSET (PbModuleInfo, sections));
  assert_int_equal (PB_MODULE_MAGIC, 0x50424f58u);
  assert_string_equal (PB_MODULE_SYMBOL, "pillarbox_module_info");
  assert_int_equal (OFFSET (PbListenerSpec, struct_size), 0);
  assert_int_equal (OFFSET (PbHookSpec, struct_size), 0);
  assert_int_equal (OFFSET (PbVerdict, struct_size), 0);
  assert_int_equal (OFFSET (PbStorageSpec, struct_size), 0);
}

static void
test_enum_values (void **state)
{
  assert_int_equal (PB_ABI_MAJOR, 1);
  assert_int_equal (PB_STAGE_CONNECT, 0);
  assert_int_equal (PB_STAGE_HELO, 1);
  assert_int_equal (PB_STAGE_AUTH, 2);
  assert_int_equal (PB_STAGE_MAIL_FROM, 3);
  assert_int_equal (PB_STAGE_RCPT_TO, 4);
  assert_int_equal (PB_STAGE_DATA_START, 5);
  assert_int_equal (PB_STAGE_DATA_END, 6);
  assert_int_equal (PB_STAGE_QUEUED, 7);
  assert_int_equal (PB_STAGE_DELIVERY_ATTEMPT, 8);
  assert_int_equal (PB_STAGE_DELIVERY_RESULT, 9);
  assert_int_equal (PB_STAGE_RCPT_ADDRESS, 10);
  assert_int_equal (PB_VERDICT_CONTINUE, 0);
  assert_int_equal (PB_VERDICT_ACCEPT, 1);
  assert_int_equal (PB_VERDICT_REJECT, 2);
  assert_int_equal (PB_VERDICT_TEMPFAIL, 3);
  assert_int_equal (PB_VERDICT_DISCONNECT, 4);
  assert_int_equal (PB_SETTING_TYPE_BOOL, 1);
  assert_int_equal (PB_SETTING_TYPE_PATH, 10);
  assert_int_equal (PB_CONN_LINE, 0);
  assert_int_equal (PB_CONN_ERROR, 4);
  assert_int_equal (PB_TLS_IMPLICIT, 1);
  assert_int_equal (PB_EVENT_AUTH_FAILED, 1);
  assert_int_equal (PB_EVENT_DISCONNECT, 7);
  assert_int_equal (PB_EVENT_SESSION_START, 8);
  assert_int_equal (PB_EVENT_BLOCK_STARTED, 12);
}

static void
test_runtime_version (void **state)
{
  guint major = 0, minor = 99;

  pb_abi_version (&major, &minor);
  assert_int_equal (major, PB_ABI_MAJOR);
  assert_int_equal (minor, PB_ABI_MINOR);
  assert_string_equal (pb_version (), PACKAGE_VERSION);
}

int
main (void)
{
  const struct CMUnitTest tests[] = {
    cmocka_unit_test (test_sizes_lp64),
    cmocka_unit_test (test_descriptor_layout),
    cmocka_unit_test (test_enum_values),
    cmocka_unit_test (test_runtime_version),
  };
  return cmocka_run_group_tests (tests, NULL, NULL);
}
