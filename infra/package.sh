#!/usr/bin/env bash
# Package a stage as a CloudFormation (SAM) template and lint it; `make package` runs this.
#
#   bash infra/package.sh            # stage prod -> build/package/{sam.json,deployment.zip}
#
# Steps: tables in the merge template vs the PynamoDB models, `chalice package` with the
# merge template, then cfn-lint on the result. Needs no AWS credentials: only a region name
# (chalice package refuses to run without one; the template itself uses AWS::Region).
# Dependencies come from requirements.lock only (hashed; `make lock`): pip installs its manylinux
# wheels for Lambda's Python into vendor/ of a staging copy of the app (build/src-<stage>) whose
# requirements.txt is empty, so chalice ships exactly the locked, hash-checked files and resolves
# nothing itself. vendor/ is reinstalled only when the lock or the Python version changes; chalice
# caches the zip in build/src-<stage>/.chalice/deployments/, keyed on the app's files and vendor/.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

BIN=${BIN:-.venv/bin}
STAGE=${STAGE:-prod}
OUT=${OUT:-build/package}
MERGE=infra/merge-${STAGE}.json
export AWS_DEFAULT_REGION=${AWS_DEFAULT_REGION:-ap-shanghai}
# cfn-lint would lint for AWS_DEFAULT_REGION and rejects names that are not AWS regions
# (ap-shanghai is not one), so name the regions to check: AWS China, Hong Kong, us-east-1.
read -r -a LINT_REGIONS <<< "${CFN_LINT_REGIONS:-cn-north-1 cn-northwest-1 ap-east-1 us-east-1}"

"$BIN/python" infra/check_tables.py "$MERGE" --stage "$STAGE"
rm -rf "$OUT"
SRC=${SRC:-build/src-$STAGE}
PY=$("$BIN/python" -c 'import sys; print("%d.%d" % sys.version_info[:2])')
GLIBC=26  # Lambda's glibc: 2.26 up to python3.11, 2.34 from python3.12 (Amazon Linux 2023)
if [[ ${PY#3.} -ge 12 ]]; then GLIBC=34; fi
mkdir -p "$SRC/.chalice" && rm -rf "$SRC/app.py" "$SRC/chalicelib" "$SRC"/.chalice/*.json
cp app.py "$SRC/" && cp -R chalicelib "$SRC/" && cp .chalice/*.json "$SRC/.chalice/"
find "$SRC/chalicelib" -name __pycache__ -prune -exec rm -rf {} +
echo "# Lambda dependencies: vendor/, installed from requirements.lock by infra/package.sh" > "$SRC/requirements.txt"
STAMP="python $PY $(sha256sum requirements.lock | cut -c1-64)"
if [[ "$(cat "$SRC/vendor.stamp" 2>/dev/null)" != "$STAMP" ]]; then
  rm -rf "$SRC/vendor" "$SRC/vendor.stamp"
  PLATFORMS=(--platform manylinux2014_x86_64)
  for minor in $(seq 17 "$GLIBC"); do PLATFORMS+=(--platform "manylinux_2_${minor}_x86_64"); done
  "$BIN/python" -m pip install --quiet --disable-pip-version-check --no-compile \
    --require-hashes --only-binary=:all: "${PLATFORMS[@]}" --implementation cp \
    --python-version "$PY" --abi "cp${PY/./}" --target "$SRC/vendor" -r requirements.lock
  echo "$STAMP" > "$SRC/vendor.stamp"
fi
"$BIN/chalice" --project-dir "$SRC" package --stage "$STAGE" --merge-template "$PWD/$MERGE" "$(realpath -m "$OUT")"
# Every code change leaves another ~27 MB zip in chalice's cache: keep the two newest.
{ find "$SRC/.chalice/deployments" -maxdepth 1 -name '*.zip' -printf '%T@ %p\n' 2>/dev/null || true; } \
  | sort -rn | tail -n +3 | cut -d' ' -f2- | xargs -r rm -f --
"$BIN/cfn-lint" --regions "${LINT_REGIONS[@]}" -- "$OUT/sam.json"
echo "packaged and linted: $OUT/sam.json"
