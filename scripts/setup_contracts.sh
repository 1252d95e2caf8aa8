#!/usr/bin/env bash
# Install what the contract tooling needs (idempotent, quiet, fast when already done):
#   - Debian: protoc-gen-go, the Go toolchain and Go protobuf runtime, protoc
#   - npm ci: buf, protoc-gen-es, the protobuf-es runtime, esbuild, typescript (package-lock.json)
#   - contracts/go/vendor: Debian's Go protobuf runtime, so `go test` builds offline
# Usage: scripts/setup_contracts.sh   (from anywhere; root needed only for apt-get)
set -euo pipefail
cd "$(dirname "$0")/.."

APT_PACKAGES=(golang-go protoc-gen-go golang-google-protobuf-dev protobuf-compiler)
missing=()
for pkg in "${APT_PACKAGES[@]}"; do
  dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "install ok installed" || missing+=("$pkg")
done
if ((${#missing[@]})); then
  echo "setup_contracts: apt-get install ${missing[*]}"
  SUDO=""; [[ $(id -u) -eq 0 ]] || SUDO="sudo"
  export DEBIAN_FRONTEND=noninteractive
  $SUDO apt-get install -y -qq "${missing[@]}" >/dev/null || {
    $SUDO apt-get update -qq >/dev/null && $SUDO apt-get install -y -qq "${missing[@]}" >/dev/null; }
fi

# npm ci only when package-lock.json changed since the last install.
stamp=node_modules/.xy-lock.sha256
want=$(sha256sum package-lock.json | cut -d' ' -f1)
if [[ ! -f $stamp || $(cat "$stamp") != "$want" ]]; then
  echo "setup_contracts: npm ci"
  npm ci --no-audit --no-fund --loglevel=error >/dev/null
  echo "$want" > "$stamp"
fi

# Go: no module proxy is reachable, so the module builds in vendor mode against Debian's source
# of google.golang.org/protobuf (the version go.mod requires must be the one Debian ships).
debian_src=/usr/share/gocode/src/google.golang.org/protobuf
required=$(awk '$1 == "require" && $2 == "google.golang.org/protobuf" {print $3}' contracts/go/go.mod)
shipped="v$(dpkg-query -W -f='${Version}' golang-google-protobuf-dev | sed 's/-[^-]*$//')"
if [[ $required != "$shipped" ]]; then
  echo "setup_contracts: contracts/go/go.mod requires google.golang.org/protobuf $required," \
       "Debian ships $shipped; set the require line to $shipped" >&2
  exit 1
fi
vendor=contracts/go/vendor
if [[ ! -f $vendor/modules.txt || $(readlink "$vendor/google.golang.org/protobuf") != "$debian_src" ]]; then
  rm -rf "$vendor"
  mkdir -p "$vendor/google.golang.org"
  ln -s "$debian_src" "$vendor/google.golang.org/protobuf"
  {
    echo "# google.golang.org/protobuf $required"
    echo "## explicit; go 1.11"
    (cd "$debian_src" && find . -name '*.go' ! -name '*_test.go' ! -path '*/testdata/*' -printf '%h\n' \
      | sort -u | sed 's|^\.|google.golang.org/protobuf|')
  } > "$vendor/modules.txt"
fi
