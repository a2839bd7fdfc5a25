"""schemathesis hooks for .ci/schemathesis.sh.

Generated patient ids are random, so almost every request would meet a
record that does not exist. Half of the positive requests to a record's
routes are pointed at one of the records the script created
(CHARTSYNC_SEED_IDS), and writes to it carry its current ETag in
If-Match, so that reads, history and successful writes are checked too.
Negative requests are left as generated. Sync bodies (a binary envelope,
docs/protocol.md) are sent as the bytes generated.
"""

import atexit
import collections
import os
import random
import sys
import urllib.error
import urllib.request

import schemathesis

IDS = [i for i in os.environ.get("CHARTSYNC_SEED_IDS", "").split(",") if i]
URL = os.environ.get("CHARTSYNC_SEED_URL", "")
TOKEN = os.environ.get("CHARTSYNC_SEED_TOKEN", "")
RECORD_PATHS = ("/v1/patients/{id}", "/v1/patients/{id}/history")
# (method, status) -> requests to the seeded records, printed at the end so
# that a run shows the happy paths were reached.
SEEDED = collections.Counter()


def _etag(patient):
    request = urllib.request.Request(f"{URL}/v1/patients/{patient}")
    if TOKEN:
        request.add_header("Authorization", f"Bearer {TOKEN}")
    try:
        with urllib.request.urlopen(request, timeout=5) as response:
            return response.headers.get("ETag")
    except (urllib.error.URLError, OSError):
        return None


@schemathesis.hook
def map_case(context, case):
    meta = case.meta
    if not IDS or meta is None or not meta.generation.mode.is_positive:
        return case
    if case.path not in RECORD_PATHS or random.random() < 0.5:
        return case
    patient = random.choice(IDS)
    case.path_parameters = {**(case.path_parameters or {}), "id": patient}
    if case.method.upper() in ("PUT", "PATCH"):
        headers = {
            k: v
            for k, v in (case.headers or {}).items()
            if k.lower() not in ("if-match", "if-none-match")
        }
        etag = _etag(patient)
        if etag:
            headers["If-Match"] = etag
        case.headers = headers
    return case


@schemathesis.hook
def after_call(context, case, response):
    if (case.path_parameters or {}).get("id") in IDS:
        SEEDED[(case.method.upper(), response.status_code)] += 1


@atexit.register
def _report():
    if IDS:
        counts = ", ".join(f"{m} {s}: {n}" for (m, s), n in sorted(SEEDED.items()))
        print(f"requests to seeded records: {counts or 'none'}", file=sys.stderr)


@schemathesis.serializer("application/vnd.chartsync.batch")
def batch(context, value):
    if isinstance(value, bytes):
        return value
    if isinstance(value, str):
        return value.encode()
    return repr(value).encode()
