#!/usr/bin/env bash
# Installs the pinned third-party MCP clients used by the tests into DIR with npm, only if missing.
#
# Usage: scripts/install_node_tools.sh [DIR]     (default: .tools, git-ignored)
#   DIR/node_modules/.bin/claude          Claude Code (native binary, node version irrelevant)
#   DIR/node_modules/.bin/mcp-inspector   MCP Inspector (use: mcp-inspector --cli ...)
# Prints nothing when both pinned versions are already there. Bump a pin here and in
# tests/support/node_tools.py together.
set -euo pipefail
CLAUDE_CODE_VERSION=2.1.330
INSPECTOR_VERSION=2.12.0
MIN_NODE_MAJOR=20   # Inspector 2.12.0 asks for >=22.19 but its CLI works on 20 (checked with 20.20.2)

D=$(realpath -m "${1:-.tools}")

installed_version() {  # installed_version PACKAGE -> version from DIR/node_modules/PACKAGE/package.json
  local pj="$D/node_modules/$1/package.json"
  [ -f "$pj" ] && command -v node >/dev/null && node -p 'require(process.argv[1]).version' "$pj"
}
want=()
[ "$(installed_version @anthropic-ai/claude-code)" = "$CLAUDE_CODE_VERSION" ] && [ -x "$D/node_modules/.bin/claude" ] \
  || want+=("@anthropic-ai/claude-code@$CLAUDE_CODE_VERSION")
[ "$(installed_version @modelcontextprotocol/inspector)" = "$INSPECTOR_VERSION" ] && [ -x "$D/node_modules/.bin/mcp-inspector" ] \
  || want+=("@modelcontextprotocol/inspector@$INSPECTOR_VERSION")
[ ${#want[@]} -eq 0 ] && exit 0

if ! command -v node >/dev/null || ! command -v npm >/dev/null; then
  echo "install_node_tools.sh: node and npm are required (node >= $MIN_NODE_MAJOR; Debian: apt-get install nodejs npm," \
       "or NodeSource for a newer node)" >&2
  exit 1
fi
major=$(node --version | sed 's/^v\([0-9]*\).*/\1/')
if [ "$major" -lt "$MIN_NODE_MAJOR" ]; then
  echo "install_node_tools.sh: node $(node --version) is too old; the Inspector CLI needs node >= $MIN_NODE_MAJOR" >&2
  exit 1
fi

echo "installing ${want[*]} into $D (npm)"
start=$(date +%s.%N)
mkdir -p "$D"
[ -f "$D/package.json" ] || echo '{"name": "spd-mcp-test-tools", "private": true}' >"$D/package.json"
# engine-strict off: Inspector's engines field asks for node >= 22.19 (its CLI works on 20).
npm install --prefix "$D" --save-exact --no-audit --no-fund --loglevel=error --engine-strict=false "${want[@]}" >/dev/null
"$D/node_modules/.bin/claude" --version >/dev/null \
  || { echo "install_node_tools.sh: $D/node_modules/.bin/claude does not run" >&2; exit 1; }
[ -x "$D/node_modules/.bin/mcp-inspector" ] \
  || { echo "install_node_tools.sh: $D/node_modules/.bin/mcp-inspector is missing after npm install" >&2; exit 1; }
echo "installed in $(awk -v s="$start" -v e="$(date +%s.%N)" 'BEGIN{printf "%.1f", e-s}') s: claude $CLAUDE_CODE_VERSION, inspector $INSPECTOR_VERSION"
