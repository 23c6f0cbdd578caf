# Two entry points, both safe on a fresh machine: `make demo` and `make test`.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.featlab-installed

.PHONY: demo test lint bench clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip

# Editable install with the dev extra; redone whenever pyproject.toml changes.
$(STAMP): pyproject.toml | $(BIN)/python
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	touch $(STAMP)

# Main job on the embedded default: extract a small timm model (random init, no download)
# over scikit-learn's bundled digits into featlab.zarr, then kNN-evaluate from the store on
# class-balanced low-shot folds (the run is saved in the store: `featlab results`).
demo: $(STAMP)
	$(BIN)/featlab extract --model timm:mobilenetv3_small_100 --random-init digits --store featlab.zarr
	$(BIN)/featlab probe --method knn --shots 50,200,all --folds 5 --store featlab.zarr

test: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/python -m pytest -q

bench: $(STAMP)
	$(BIN)/python benchmarks/extract.py

clean:
	rm -rf featlab.zarr build *.egg-info
