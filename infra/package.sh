#!/usr/bin/env bash
# Package a stage as a CloudFormation (SAM) template and lint it; `make package` runs this.
#
#   bash infra/package.sh            # stage prod -> build/package/{sam.json,deployment.zip}
#
# Steps: tables in the merge template vs the PynamoDB models, `chalice package` with the
# merge template, then cfn-lint on the result. Needs no AWS credentials: only a region name
# (chalice package refuses to run without one; the template itself uses AWS::Region).
# Chalice downloads Lambda (manylinux) wheels for requirements.txt and caches the zip in
# .chalice/deployments/, keyed on requirements.txt and the app's files: ~15-20 s after any
# change to app.py/chalicelib/requirements, ~3 s when nothing changed.
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
"$BIN/chalice" package --stage "$STAGE" --merge-template "$MERGE" "$OUT"
# Chalice keys its cached zip on requirements.txt *and* the app's files, so every code change
# leaves another ~27 MB zip behind: keep the two newest.
find .chalice/deployments -maxdepth 1 -name '*.zip' -printf '%T@ %p\n' 2>/dev/null \
  | sort -rn | tail -n +3 | cut -d' ' -f2- | xargs -r rm -f --
"$BIN/cfn-lint" --regions "${LINT_REGIONS[@]}" -- "$OUT/sam.json"
echo "packaged and linted: $OUT/sam.json"
