# imbadv: `make help` lists the targets. Every target uses the virtual environment in .venv.
PY ?= .venv/bin/python
SWEEP ?=
DATA ?= ../shared/data/cifar10-jpeg.tar.gz
# the defenses at CPU scale: PGD-3 (step 4/255) inside training; one job per model attacks 300 images of every class
DEFENSE_ARGS ?= ++adversarial.steps=3 ++adversarial.alpha=0.01568627450980392 class=0 attack.images=all attack.per_class=300
.DEFAULT_GOAL := help

help: ## List the targets
	@grep -hE '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  %-12s %s\n", $$1, $$2}'

install: ## Create .venv and install imbadv with its test tools (CPU or GPU torch)
	python3 -m venv .venv
	$(PY) -m pip install --upgrade pip
	$(PY) -m pip install torch==2.14.1 torchvision==0.29.1
	$(PY) -m pip install -e ".[dev]"

test: ## Run the test suite (CPU, no network, no root; 9-16 min on 2 cores)
	$(PY) -m pytest -q

test-fast: ## Every test not marked slow (no CLI subprocesses, no sweep fixtures): the edit-test loop, ~2 min
	$(PY) -m pytest -q -m "not slow and not cluster"

test-data: ## Debian's Fashion-MNIST (root: apt), so its real-data test runs instead of skipping
	dpkg -s dataset-fashion-mnist >/dev/null 2>&1 || { apt-get update -qq && \
		DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends dataset-fashion-mnist >/dev/null; }

test-cluster: ## Real SLURM and Ray sweeps on this machine (root: apt and pip installs, daemons on loopback only; ~3-6 min)
	PY=$(PY) scripts/cluster.sh install
	PY=$(PY) scripts/cluster.sh test

lint: ## ruff: lint and formatting
	$(PY) -m ruff check .
	$(PY) -m ruff format --check .

format: ## ruff: fix what can be fixed
	$(PY) -m ruff check --fix .
	$(PY) -m ruff format .

smoke: ## One experiment on synthetic data (seconds)
	$(PY) -m imbadv.run experiment=smoke class=3 imbalance=under

quick: ## One quick experiment on the real CIFAR-10 copy (DATA=path/to/cifar10-jpeg.tar.gz)
	$(PY) -m imbadv.run experiment=quick dataset=folder dataset.root=$(DATA) class=3 imbalance=under

reproduce: ## All 50 combinations of the paper (EXTRA="experiment=quick dataset=folder dataset.root=...")
	$(PY) -m imbadv.run -m class=0..9 imbalance=balanced,under,over $(EXTRA)

longtail-quick: ## Long-tail study on CPU: CIFAR-10-LT IR 10, standard/fast-FGSM AT x CE/balanced softmax, 3 seeds
	$(PY) -m imbadv.run -m experiment=longtail_quick dataset=folder dataset.root=$(DATA) \
		adversarial=none,fast_fgsm objective=ce,balanced_softmax class=0..9 seed=0,1,2 $(EXTRA)

longtail-defenses: ## The long-tail defenses on CPU: PGD-AT, MART, AT-BSL, AWP, TAET, class-wise eps, RoBal-N/R, REAT; PGD-3 inner, 3 seeds (~3 h)
	$(PY) -m imbadv.run -m experiment=longtail_quick dataset=folder dataset.root=$(DATA) seed=0,1,2 \
		adversarial=pgd_at,mart,at_bsl,awp $(DEFENSE_ARGS) hydra.sweep.dir=multirun/lt-defenses $(EXTRA)
	$(PY) -m imbadv.run -m experiment=longtail_quick dataset=folder dataset.root=$(DATA) seed=0,1,2 \
		adversarial=taet ++adversarial.clean_epochs=8 $(DEFENSE_ARGS) hydra.sweep.dir=multirun/lt-taet $(EXTRA)
	$(PY) -m imbadv.run -m experiment=longtail_quick dataset=folder dataset.root=$(DATA) seed=0,1,2 \
		adversarial=pgd_at adversarial.classwise=true $(DEFENSE_ARGS) hydra.sweep.dir=multirun/lt-classwise $(EXTRA)
	$(PY) -m imbadv.run -m experiment=longtail_quick dataset=folder dataset.root=$(DATA) seed=0,1,2 \
		adversarial=robal_n,robal_r model.head=cosine $(DEFENSE_ARGS) hydra.sweep.dir=multirun/lt-robal $(EXTRA)
	$(PY) -m imbadv.run -m experiment=longtail_quick dataset=folder dataset.root=$(DATA) seed=0,1,2 \
		adversarial=reat optimizer.lr=0.05,0.02 $(DEFENSE_ARGS) hydra.sweep.dir=multirun/lt-reat $(EXTRA)

gpu-check: ## On a GPU, first: every GPU code path at toy size, PASS|FAIL|SKIP each, ~3 min (ARGS="--device cpu")
	PY=$(PY) bash scripts/gpu_check.sh $(ARGS)

gpu-reference: ## On a lent GPU, one call: paper preset 3 seeds + matched, then longtail seeds, in 12 min (DATA=...)
	PY=$(PY) DATA=$(DATA) bash scripts/gpu_reference.sh

wheelhouse: ## Wheels an air-gapped GPU node lacks, into .whl/ (WHEELHOUSE=dir; WANDB=1 adds wandb; docs/gpu.md)
	PY=$(PY) WHEELHOUSE="$(WHEELHOUSE)" WANDB="$(WANDB)" bash scripts/wheelhouse.sh

report: ## Table 1 and figures for a sweep (SWEEP=multirun/<date>/<time>; default: the newest)
	$(PY) -m imbadv.report $(SWEEP)

status: ## How far a sweep is: jobs done/running/failed/pending, models, time left (SWEEP=...; default: newest)
	$(PY) -m imbadv.status $(SWEEP)

bench: ## Speed against a raw PyTorch loop and torchattacks (JSON to bench.json)
	$(PY) -m imbadv.bench --json bench.json

bench-smoke: ## CI: the bench at small sizes, every row, --strict identity checks, seeds 0 and 1 (~20-40 s)
	for seed in 0 1; do \
		$(PY) -m imbadv.bench --device cpu --threads 1 --width 0.125 --batch-size 32 --steps 2 \
			--warmup 1 --repeats 1 --attack-images 64 --eval-images 512 --attack-steps 3 --group 2 --stack 2 \
			--strict --seed $$seed $$([ $$seed = 0 ] || echo --no-processes) || exit 1; \
	done

clean: ## Remove outputs and caches (keeps data/ and the model store)
	rm -rf outputs .pytest_cache .ruff_cache

.PHONY: help install test test-fast test-data test-cluster lint format smoke quick reproduce longtail-quick longtail-defenses gpu-check gpu-reference report status bench bench-smoke clean wheelhouse
