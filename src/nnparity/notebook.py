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
    for side in ("candidate", "reference"):
        name = report.candidate if side == "candidate" else report.reference
        final = report.final_params[side]
        print(f"\n## {name} ({side})", file=out)
        for i in range(report.steps_run):
            if i % (steps / 10) == 0:  # the notebook's test, float division and all
                print(
                    "error at step {:5d}: {:10.6e}".format(i, report.trace[f"{side}_loss"].iloc[i]), file=out
                )
        if steps == 1 and report.steps_run == 1:  # the notebook prints the one step's gradients
            _print_gradients(out, name, spec, params, data)
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


def _print_gradients(
    out: TextIO, name: str, spec: NetworkSpec, params: list[LayerParams], data: Dataset
) -> None:
    """The first step's weight gradients, each side in its own layout, as the notebook prints them
    when ``NUM_ITERATIONS == 1`` (the same step as the run's first: same weights, same batch)."""
    grads = load_backend(name)(spec, params).step(data.x, data.y).grads
    hidden, output = grads[0].weight, grads[1].weight
    if name == "torch":
        hidden, output = hidden.T, output.T
    print(f"dE_dv:\n{hidden}", file=out)
    print(f"dE_dw:\n{output}", file=out)


def _predict(name: str, spec: NetworkSpec, params: list[LayerParams], x: np.ndarray) -> np.ndarray:
    backend = load_backend(name)(spec, params)
    return np.asarray(backend.predict(x)).reshape(-1)
