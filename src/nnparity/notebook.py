"""``nnparity seed``: the reference notebook's experiment, printed as the notebook prints it."""

from __future__ import annotations

import time
from typing import TextIO

import numpy as np
import pandas as pd

from nnparity.backend import load_backend
from nnparity.dataset import Dataset, or_table
from nnparity.initialization import init_params
from nnparity.optim import SGD
from nnparity.records import LayerParams
from nnparity.report import Report
from nnparity.spec import NetworkSpec
from nnparity.verify import verify

LEARNING_RATE = 0.05
NUM_ITERATIONS = 10_000
NUM_NEURONS_HIDDEN = 3


def notebook_spec() -> NetworkSpec:
    """2-3-1, sigmoid after both layers, no bias, MSE (mean), SGD lr 0.05, float64."""
    return NetworkSpec((2, NUM_NEURONS_HIDDEN, 1), ("sigmoid", "sigmoid"), optimizer=SGD(LEARNING_RATE))


def prediction_table(data: Dataset, predictions: np.ndarray) -> pd.DataFrame:
    """The notebook's table: the data, the ``prediction`` and ``error = output - prediction``."""
    predicted = pd.DataFrame(predictions, columns=["prediction"], index=data.frame.index)
    output = pd.concat((data.frame, predicted), axis=1)
    output["error"] = output[data.frame.columns[-1]] - output["prediction"]
    return output


def run_seed(out: TextIO, steps: int = NUM_ITERATIONS, progress: bool = False) -> Report:
    """Train both backends on the OR table in lockstep and print what the notebook prints."""
    data = or_table()
    spec = notebook_spec()
    params = init_params(spec, seed=1, scheme="numpy-rand")
    print(f"Inputs:\n{data.x.astype('float32')}", file=out)
    print(f"Truth: \n{data.y.astype('float32')}", file=out)
    print(f"\nStarting hidden layer weights:\n{params[0].weight}\n", file=out)
    print(f"Starting output layer weights:\n{params[1].weight}", file=out)

    t0 = time.perf_counter()
    report = verify(spec, data.x, data.y, steps=steps, params=params, progress=progress)
    wall = time.perf_counter() - t0
    every = max(1, steps // 10)
    for side in ("candidate", "reference"):
        name = report.candidate if side == "candidate" else report.reference
        final = report.final_params[side]
        print(f"\n## {name} ({side})", file=out)
        for i in range(0, report.steps_run, every):
            print("error at step {:5d}: {:10.6e}".format(i, report.trace[f"{side}_loss"].iloc[i]), file=out)
        print("Final weights:", file=out)
        # Each side in its own layout, as the notebook prints it: NumPy's (in, out), torch's (out, in).
        hidden, output = final[0].weight, final[1].weight
        if name == "torch":
            hidden, output = hidden.T, output.T
        print(f"       hidden: {hidden.flatten()}", file=out)
        print(f"       output: {output.flatten()}", file=out)
        if name == "numpy":
            print("Final bias:    0.0", file=out)
        print(f"{report.steps_run:d} iterations took {report.seconds[side]:.1f} seconds", file=out)
        print(file=out)
        print(prediction_table(data, _predict(name, spec, final, data.x)), file=out)
    print(f"\n{report.summary()}", file=out)
    print(f"(lockstep run with every step compared: {wall:.1f} seconds)", file=out)
    return report


def _predict(name: str, spec: NetworkSpec, params: list[LayerParams], x: np.ndarray) -> np.ndarray:
    backend = load_backend(name)(spec, params)
    return np.asarray(backend.predict(x)).reshape(-1)
