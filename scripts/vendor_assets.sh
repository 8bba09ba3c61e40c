#!/usr/bin/env bash
# Vendor the pinned front-end assets from the npm registry into static/vendor/.
#
# Run by a developer when bumping a version; the output is committed, so neither the app nor CI
# needs npm or a network. Only `npm pack` talks to the network (the npm registry), never a CDN.
#
#   scripts/vendor_assets.sh            fetch, check tarball integrity, check files against SHA256SUMS
#   scripts/vendor_assets.sh --update   same, but (re)write SHA256SUMS (after changing a pin below)
#
# Each tarball's sha512 integrity is pinned below: a re-published or tampered tarball fails the run.
set -euo pipefail

HTMX_VERSION="2.0.11"
HTMX_INTEGRITY="sha512-Thx/WtpeOQqSrqBCw/A1cwGJGg4UrVa3+sW0GmrM3p4gJgO89ecH4qtbnyzDDWFvBTqjnIMCgELTNt636dtamA=="
RESPONSE_TARGETS_VERSION="2.0.4"
RESPONSE_TARGETS_INTEGRITY="sha512-Q/yfH0N2A40j903mr6ldGV3qLWMQeufROylYIbYQLBGrCpmydflxXmQwDOEhEWdPnBTgiHofkAo0gQ3S1BmyxQ=="
TOKENS_VERSION="9.4.2"
TOKENS_INTEGRITY="sha512-WNoDWLYFj38Cj0FolbNsLaY54JbjuYoO0qsLCj6yBb3Bkg4BEdAjOHji9AktL9IZGPsNhTcMp2/8CfzKtSHg2A=="
ICONS_VERSION="9.3.1"
ICONS_INTEGRITY="sha512-16BIFAT93LJ8X4YRXz5cR9ZPHeErMg3DYS0gyTPNPkd0E5IBPoTxPINjn2b4Mr9Sc1x4RfI4AqPcV8ut0D1J5w=="
# uPlot draws the campaign clicks/orders chart (small, no eval, so a strict CSP allows it).
UPLOT_VERSION="1.6.32"
UPLOT_INTEGRITY="sha512-KIMVnG68zvu5XXUbC4LQEPnhwOxBuLyW1AHtpm6IKTXImkbLgkMy+jabjLgSLMasNuGGzQm/ep3tOkyTxpiQIw=="
# Only the icons the templates and app.css use (as CSS masks).
ICONS=(
  PersonSegmentIcon MegaphoneIcon PersonIcon ChatIcon SettingsIcon MobileIcon
  SearchIcon XSmallIcon ChevronLeftIcon ChevronRightIcon SelectIcon
  InfoIcon AlertTriangleIcon AlertCircleIcon CheckCircleIcon HomeIcon
)

update=0
case "${1:-}" in
  --update) update=1 ;;
  "") ;;
  *) echo "usage: $0 [--update]" >&2; exit 2 ;;
esac

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
dest="$root/static/vendor"
tmp="$(mktemp -d)"
trap 'rm -rf "$tmp"' EXIT
stage="$tmp/stage"
mkdir -p "$stage/licenses" "$stage/polaris-icons-$ICONS_VERSION"

fetch() {  # fetch <spec> <tarball name> <pinned integrity>
  local spec="$1" tarball="$2" pinned="$3" actual
  ( cd "$tmp" && npm pack --silent "$spec" >/dev/null )
  actual="sha512-$(openssl dgst -sha512 -binary "$tmp/$tarball" | base64 -w0)"
  if [[ "$actual" != "$pinned" ]]; then
    echo "integrity mismatch for $spec: got $actual, pinned $pinned" >&2
    exit 1
  fi
}

extract() {  # extract <tarball> <path inside the tarball> <destination file>
  tar -xzOf "$tmp/$1" "package/$2" > "$3"
}

fetch "htmx.org@$HTMX_VERSION" "htmx.org-$HTMX_VERSION.tgz" "$HTMX_INTEGRITY"
fetch "htmx-ext-response-targets@$RESPONSE_TARGETS_VERSION" \
      "htmx-ext-response-targets-$RESPONSE_TARGETS_VERSION.tgz" "$RESPONSE_TARGETS_INTEGRITY"
fetch "@shopify/polaris-tokens@$TOKENS_VERSION" "shopify-polaris-tokens-$TOKENS_VERSION.tgz" "$TOKENS_INTEGRITY"
fetch "@shopify/polaris-icons@$ICONS_VERSION" "shopify-polaris-icons-$ICONS_VERSION.tgz" "$ICONS_INTEGRITY"
fetch "uplot@$UPLOT_VERSION" "uplot-$UPLOT_VERSION.tgz" "$UPLOT_INTEGRITY"

extract "htmx.org-$HTMX_VERSION.tgz" dist/htmx.min.js "$stage/htmx-$HTMX_VERSION.min.js"
extract "htmx.org-$HTMX_VERSION.tgz" LICENSE "$stage/licenses/htmx.org.txt"
extract "htmx-ext-response-targets-$RESPONSE_TARGETS_VERSION.tgz" dist/response-targets.min.js \
        "$stage/htmx-ext-response-targets-$RESPONSE_TARGETS_VERSION.min.js"
extract "htmx-ext-response-targets-$RESPONSE_TARGETS_VERSION.tgz" LICENSE "$stage/licenses/htmx-ext-response-targets.txt"
extract "shopify-polaris-tokens-$TOKENS_VERSION.tgz" dist/css/styles.css "$stage/polaris-tokens-$TOKENS_VERSION.css"
extract "shopify-polaris-tokens-$TOKENS_VERSION.tgz" LICENSE.md "$stage/licenses/shopify-polaris-tokens.md"
extract "shopify-polaris-icons-$ICONS_VERSION.tgz" LICENSE.md "$stage/licenses/shopify-polaris-icons.md"
extract "uplot-$UPLOT_VERSION.tgz" dist/uPlot.iife.min.js "$stage/uplot-$UPLOT_VERSION.min.js"
extract "uplot-$UPLOT_VERSION.tgz" dist/uPlot.min.css "$stage/uplot-$UPLOT_VERSION.min.css"
extract "uplot-$UPLOT_VERSION.tgz" LICENSE "$stage/licenses/uplot.txt"
for icon in "${ICONS[@]}"; do
  extract "shopify-polaris-icons-$ICONS_VERSION.tgz" "dist/svg/$icon.svg" "$stage/polaris-icons-$ICONS_VERSION/$icon.svg"
done

# The stated versions must be the ones inside the files (htmx embeds its version string).
grep -q "version:\"$HTMX_VERSION\"" "$stage/htmx-$HTMX_VERSION.min.js" \
  || { echo "htmx.min.js does not say version $HTMX_VERSION" >&2; exit 1; }
grep -q "(v$UPLOT_VERSION)" "$stage/uplot-$UPLOT_VERSION.min.js" \
  || { echo "uPlot.iife.min.js does not say version $UPLOT_VERSION" >&2; exit 1; }

( cd "$stage" && find . -type f ! -name SHA256SUMS | sed 's|^\./||' | LC_ALL=C sort | xargs sha256sum ) > "$tmp/SHA256SUMS"

if [[ $update -eq 0 && -f "$dest/SHA256SUMS" ]]; then
  if ! diff -u "$dest/SHA256SUMS" "$tmp/SHA256SUMS"; then
    echo "the fetched files differ from the committed static/vendor/SHA256SUMS (run with --update after a pin change)" >&2
    exit 1
  fi
fi

# Replace the vendored files (README.md is ours and stays), then check what is on disk.
find "$dest" -mindepth 1 ! -name README.md -delete 2>/dev/null || true
mkdir -p "$dest"
cp -R "$stage/." "$dest/"
cp "$tmp/SHA256SUMS" "$dest/SHA256SUMS"
( cd "$dest" && sha256sum --quiet -c SHA256SUMS )

cat > "$dest/README.md" <<EOF
# Vendored front-end assets

Written by \`scripts/vendor_assets.sh\` from the npm registry (\`npm pack\`, no CDN); committed so the app
and CI need no network. Do not edit these files by hand: change a pin in the script and run it with
\`--update\`. \`SHA256SUMS\` lists every file here (check with \`cd static/vendor && sha256sum -c SHA256SUMS\`).

| file | package | license |
|---|---|---|
| \`htmx-$HTMX_VERSION.min.js\` | \`htmx.org@$HTMX_VERSION\` (\`dist/htmx.min.js\`) | 0BSD, \`licenses/htmx.org.txt\` |
| \`htmx-ext-response-targets-$RESPONSE_TARGETS_VERSION.min.js\` | \`htmx-ext-response-targets@$RESPONSE_TARGETS_VERSION\` (\`dist/response-targets.min.js\`) | 0BSD, \`licenses/htmx-ext-response-targets.txt\` |
| \`polaris-tokens-$TOKENS_VERSION.css\` | \`@shopify/polaris-tokens@$TOKENS_VERSION\` (\`dist/css/styles.css\`, CSS custom properties) | MIT with Shopify's use restriction, \`licenses/shopify-polaris-tokens.md\` |
| \`uplot-$UPLOT_VERSION.min.js\`, \`uplot-$UPLOT_VERSION.min.css\` | \`uplot@$UPLOT_VERSION\` (\`dist/uPlot.iife.min.js\`, \`dist/uPlot.min.css\`) | MIT, \`licenses/uplot.txt\` |
| \`polaris-icons-$ICONS_VERSION/*.svg\` | \`@shopify/polaris-icons@$ICONS_VERSION\` (\`dist/svg/\`, ${#ICONS[@]} icons) | MIT with Shopify's use restriction, \`licenses/shopify-polaris-icons.md\` |

The Shopify licenses allow use only in apps that integrate with Shopify; Kinnekt is one (it runs
embedded in the Shopify admin).

htmx stays on 2.x on purpose: npm's \`latest\` is 4.x, a fetch-based rewrite with different request
headers and no 286 stop-polling status.
EOF

echo "static/vendor is up to date:"
sed 's/^/  /' "$dest/SHA256SUMS"
