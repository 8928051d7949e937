#!/usr/bin/env bash
# The DICOM software the node's tests (tests/dicomnode) run against, from Debian: DCMTK (storescu,
# echoscu), Orthanc (the PACS) and dicom3tools (dciodvfy). Idempotent: installs only what is
# missing. The orthanc package's own service is never started (policy-rc.d) and is disabled: the
# tests start their own Orthanc on free loopback ports, and a system one on 4242/8042 must not
# answer instead.
set -euo pipefail
need=()
command -v storescu >/dev/null || need+=(dcmtk)
command -v Orthanc >/dev/null || need+=(orthanc)
command -v dciodvfy >/dev/null || need+=(dicom3tools)
if [ "${#need[@]}" -gt 0 ]; then
    policy=/usr/sbin/policy-rc.d
    created=0
    if [ ! -e "$policy" ]; then
        printf '#!/bin/sh\n# no service starts during package installs (.ci/dicom-deps.sh)\nexit 101\n' > "$policy"
        chmod +x "$policy"
        created=1
    fi
    trap '[ "$created" = 1 ] && rm -f "$policy"' EXIT
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -q
    apt-get install -y -q --no-install-recommends "${need[@]}"
fi
if command -v systemctl >/dev/null && [ -d /run/systemd/system ]; then
    systemctl disable --now orthanc >/dev/null 2>&1 || true
fi
echo "DICOM tools: $(storescu --version | head -1), $(Orthanc --version | head -1), dciodvfy $(command -v dciodvfy)"
