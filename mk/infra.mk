# Test infrastructure, included by the Makefile: a real single-node SLURM cluster, the pinned node
# MCP clients (Claude Code, MCP Inspector) and Debian's chromium (the HTML report's browser tests).
# Installs are idempotent and stamped in $(TOOLS_DIR)/.stamps;
# the tests start and stop the cluster themselves (tests/support/slurm.py), so `make test` needs only
# `infra`. Where an install is impossible (no root, no node) it warns and the tests skip, unless
# SPD_MCP_REQUIRE_SLURM / SPD_MCP_REQUIRE_NODE_TOOLS / SPD_MCP_REQUIRE_CHROMIUM is set (CI), which
# makes it an error.
SLURM_DIR ?= /tmp/spd-mcp-slurm
TOOLS_DIR ?= .tools
INFRA_STAMPS := $(TOOLS_DIR)/.stamps
# run_or_warn SCRIPT, REQUIRE_VAR, WHAT: touch the target on success; fail only when REQUIRE_VAR is set.
define run_or_warn
	@mkdir -p $(@D)
	@if $(1); then touch $@; \
	elif [ -n "$$$(2)" ] && [ "$$$(2)" != 0 ]; then echo "error: $(3) failed and $(2) is set" >&2; exit 1; \
	else echo "warning: $(3) failed; the tests that need it will skip (set $(2)=1 to make this an error)" >&2; fi
endef

.PHONY: infra slurm-install slurm-up slurm-down node-tools chromium

infra: slurm-install node-tools chromium

slurm-install: $(INFRA_STAMPS)/slurm-install
$(INFRA_STAMPS)/slurm-install: scripts/slurm/install.sh
	$(call run_or_warn,scripts/slurm/install.sh,SPD_MCP_REQUIRE_SLURM,installing SLURM)

node-tools: $(INFRA_STAMPS)/node-tools
$(INFRA_STAMPS)/node-tools: scripts/install_node_tools.sh
	$(call run_or_warn,scripts/install_node_tools.sh $(TOOLS_DIR),SPD_MCP_REQUIRE_NODE_TOOLS,installing the node tools)

chromium: $(INFRA_STAMPS)/chromium
$(INFRA_STAMPS)/chromium: scripts/install_chromium.sh
	$(call run_or_warn,scripts/install_chromium.sh,SPD_MCP_REQUIRE_CHROMIUM,installing chromium)

# A long-lived cluster for working by hand (export SLURM_CONF=$(SLURM_DIR)/slurm.conf); tests reuse it
# when SPD_MCP_SLURM_DIR is unset or equal, and leave it running.
slurm-up: slurm-install
	scripts/slurm/up.sh $(SLURM_DIR) --accounting

slurm-down:
	scripts/slurm/down.sh $(SLURM_DIR)
