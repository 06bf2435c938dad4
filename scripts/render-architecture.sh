#!/usr/bin/env bash
# Renders docs/architecture/tier.dot into tier.svg with Graphviz (Debian package graphviz) and
# records the SHA-256 of the source in the SVG, so tests/test_docs_architecture.py can tell that
# the committed picture is the current source's without comparing Graphviz's own bytes.
# Usage: scripts/render-architecture.sh        (also: make docs-architecture)
set -euo pipefail

cd "$(dirname "$0")/.."
src=docs/architecture/tier.dot
out=docs/architecture/tier.svg
command -v dot >/dev/null || {
  echo "render-architecture: dot not found: install Graphviz (make system-deps, or apt-get install graphviz)" >&2
  exit 1
}
sum=$(sha256sum "$src" | cut -d' ' -f1)
tmp=$(mktemp "$out.XXXXXX")
trap 'rm -f "$tmp"' EXIT
dot -Tsvg "$src" -o "$tmp"
# After the XML declaration (a comment may precede the DOCTYPE).
sed -i "1a <!-- source: $src sha256: $sum (scripts/render-architecture.sh; do not edit by hand) -->" "$tmp"
mv "$tmp" "$out"
trap - EXIT
echo "render-architecture: $out from $src ($sum)"
