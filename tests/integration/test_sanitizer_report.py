# SPDX-License-Identifier: Apache-2.0
"""The harness fails a test whose daemon logged a sanitizer report (make check-asan relies on it): a stand-in
daemon prints the first line of an AddressSanitizer, LeakSanitizer or UBSan report and exits 0 on SIGTERM; the
test case's cleanup must fail naming the daemon and quoting the report. A clean log passes."""

import os
import sys
import unittest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import konntest as kt  # noqa: E402

REPORTS = {
    "asan": "==4242==ERROR: AddressSanitizer: heap-use-after-free on address 0x602000000010 at pc 0x1",
    "lsan": "==4242==ERROR: LeakSanitizer: detected memory leaks",
    "ubsan": "src/shared/packet.c:120:9: runtime error: signed integer overflow: 9223372036854775807 + 1",
}


@unittest.skipIf(kt.WRAPPER, "the stand-in daemon is a shell script, not for KONN_WRAPPER")
class SanitizerReport(kt.KonnTestCase):

    def fake_daemon(self, name, line):
        script = 'trap "exit 0" TERM; echo "<6>started"; %s; while :; do sleep 0.05; done' % (
            'echo "%s" >&2' % line if line else ":")
        d = kt.Daemon(name, ["/bin/sh", "-c", script], self.dir).start()
        self.daemons.append(d)
        d.wait_for(r"^started$", timeout=10)
        return d

    def test_reports_fail_the_test(self):
        for kind, line in REPORTS.items():
            with self.subTest(kind=kind):
                d = self.fake_daemon("fake-" + kind, line)
                self.wait_until(lambda: line in d.text(), 10, "the report in the log")
                with self.assertRaises(AssertionError) as cm:
                    self._cleanup()
                self.assertIn("sanitizer report from fake-%s:\n%s" % (kind, line), str(cm.exception))
                self.assertNotIn("exited", str(cm.exception))   # rc 0: only the report failed it
                self.daemons.remove(d)

    def test_clean_log_passes(self):
        d = self.fake_daemon("fake-clean", None)
        self._cleanup()
        self.daemons.remove(d)
        self.assertEqual(d.returncode, 0)
        self.assertIsNone(d.sanitizer_report())


if __name__ == "__main__":
    kt.main()
