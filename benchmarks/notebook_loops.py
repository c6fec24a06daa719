"""The reference notebook's two training loops, as it wrote them (prints removed): the anchors."""

from __future__ import annotations

import numpy
import torch

LEARNING_RATE = 0.05
NUM_NEURONS_HIDDEN = 3


def or_table() -> tuple[numpy.ndarray, numpy.ndarray]:
    inputs = numpy.array([[0, 0], [0, 1], [1, 0], [1, 1]], dtype="float32")
    ground_truth = numpy.array([[0], [1], [1], [1]], dtype="float32")
    return inputs, ground_truth


def linear(x, weights, bias):  # type: ignore[no-untyped-def]
    return numpy.dot(x, weights) + bias


def sigmoid(x):  # type: ignore[no-untyped-def]
    return 1.0 / (1.0 + numpy.exp(-x))


def numpy_loop(num_iterations: int) -> numpy.ndarray:
    inputs, ground_truth = or_table()
    numpy.random.seed(seed=1)
    weights_hidden = numpy.random.rand(inputs.shape[1], NUM_NEURONS_HIDDEN)
    weights_output = numpy.random.rand(NUM_NEURONS_HIDDEN, 1)
    bias = 0.0
    for _ in range(num_iterations):
        w = weights_output
        v = weights_hidden
        yhat = linear(inputs, v, bias)
        g = sigmoid(yhat)
        y = linear(g, w, bias)
        f = sigmoid(y)
        error = numpy.power(f - ground_truth, 2)
        error.mean()
        dE_df = 0.5 * (f - ground_truth)
        df_dy = f * (1.0 - f)
        dy_dw = g
        dE_dy = dE_df * df_dy
        dE_dw = numpy.dot(dy_dw.T, dE_dy)
        dy_dg = w
        dE_dg = numpy.dot(dE_dy, dy_dg.T)
        dg_dyhat = g * (1.0 - g)
        dyhat_dv = inputs
        dE_dyhat = dE_dg * dg_dyhat
        dE_dv = numpy.dot(dyhat_dv.T, dE_dyhat)
        weights_hidden -= LEARNING_RATE * dE_dv
        weights_output -= LEARNING_RATE * dE_dw
    return weights_hidden


def torch_loop(num_iterations: int) -> numpy.ndarray:
    inputs, ground_truth = or_table()
    model = torch.nn.Sequential(
        torch.nn.Linear(inputs.shape[1], NUM_NEURONS_HIDDEN, bias=False),
        torch.nn.Sigmoid(),
        torch.nn.Linear(NUM_NEURONS_HIDDEN, 1, bias=False),
        torch.nn.Sigmoid(),
    )
    numpy.random.seed(seed=1)
    with torch.no_grad():
        model[0].weight = torch.nn.Parameter(
            torch.from_numpy(numpy.random.rand(inputs.shape[1], NUM_NEURONS_HIDDEN).T)
        )
        model[2].weight = torch.nn.Parameter(torch.from_numpy(numpy.random.rand(NUM_NEURONS_HIDDEN, 1).T))
    inputs_tensor = torch.from_numpy(inputs.astype(numpy.float64))
    truth_tensor = torch.from_numpy(ground_truth.reshape(-1, 1).astype(numpy.float64))
    loss = torch.nn.MSELoss(reduction="mean")
    optimizer = torch.optim.SGD(model.parameters(), lr=LEARNING_RATE)
    model.train()
    for _ in range(num_iterations):
        f = model(inputs_tensor)
        error = loss(f, truth_tensor)
        error.mean()
        optimizer.zero_grad()
        error.backward()
        optimizer.step()
    return next(model[0].parameters()).detach().numpy()
