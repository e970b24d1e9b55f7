"""``%load_ext jupyter_sse`` with the training libraries, for real, in a kernel started by a real server: a tiny
model built from a config (no weights or data sets are downloaded), trained for two epochs by transformers'
``Trainer``; a ``datasets`` map in two worker processes. Each run's jobs, their nesting and final states are
asserted on the server, the cell shows our bars and not the library's HTML, and a cancel stops the training
cleanly through the library's own stop mechanism."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest

from jupyter_sse.client import AsyncClient
from tests.conftest import SSEServer
from tests.integration._capture import (
    cancel_when_running,
    error_names,
    foreign_displays,
    job_displays,
    settled,
    until_idle,
)
from tests.integration.conftest import KernelSession, errors

pytestmark = pytest.mark.timeout(240)

OFFLINE = {
    "HF_HUB_OFFLINE": "1",
    "HF_DATASETS_OFFLINE": "1",
    "TRANSFORMERS_OFFLINE": "1",
    "KERAS_BACKEND": "torch",
    "TOKENIZERS_PARALLELISM": "false",
}


@pytest.fixture(autouse=True)
def _offline(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    # before the server starts: its kernels inherit the environment
    for name, value in OFFLINE.items():
        monkeypatch.setenv(name, value)
    yield


TINY_BERT = """
%load_ext jupyter_sse
import os, tempfile, warnings
warnings.filterwarnings('ignore')
import torch
from datasets import Dataset
from transformers import BertConfig, BertForSequenceClassification, Trainer, TrainingArguments
torch.manual_seed(0)
config = BertConfig(vocab_size=50, hidden_size=8, num_hidden_layers=1, num_attention_heads=2,
                    intermediate_size=16, max_position_embeddings=16, num_labels=2)
model = BertForSequenceClassification(config)
def rows(n):
    g = torch.Generator().manual_seed(n)
    return Dataset.from_dict({'input_ids': torch.randint(0, 50, (n, 8), generator=g).tolist(),
                              'labels': torch.randint(0, 2, (n,), generator=g).tolist()})
"""


def _trainer(rows: int, epochs: int, batch: int) -> str:
    return (
        f"args = TrainingArguments(output_dir=tempfile.mkdtemp(), num_train_epochs={epochs}, "
        f"per_device_train_batch_size={batch}, per_device_eval_batch_size=4, eval_strategy='epoch', "
        "logging_steps=1, report_to=[], save_strategy='no', use_cpu=True)\n"
        f"trainer = Trainer(model=model, args=args, train_dataset=rows({rows}), eval_dataset=rows(8))\n"
    )


async def _all_jobs(server: SSEServer) -> list[dict[str, Any]]:
    async with AsyncClient(server.url, server.token) as client:
        return list(await client.list())


async def test_trainer_two_epochs_is_a_job_with_nested_evaluations(
    sse_server: SSEServer, kernel: KernelSession
) -> None:
    assert errors(await kernel.execute(TINY_BERT, timeout=120)) == []
    messages = await kernel.execute(_trainer(16, 2, 4) + "result = trainer.train()\n", timeout=120)
    assert errors(messages) == []
    jobs = await settled(sse_server, ["Trainer.train"])
    train = jobs["Trainer.train"]
    assert (train["state"], train["n"], train["total"], train["unit"]) == ("succeeded", 8, 8, "steps"), train
    assert train["message"].startswith("epoch 2/2"), train["message"]
    assert "eval_loss=" in train["message"] or "loss=" in train["message"], train["message"]
    evaluations = [j for j in await _all_jobs(sse_server) if j["name"] == "Trainer.evaluate"]
    assert len(evaluations) == 2, evaluations
    for ev in evaluations:
        assert (ev["state"], ev["n"], ev["total"], ev["parent"]) == ("succeeded", 2, 2, train["id"]), ev
        assert "eval_loss=" in ev["message"]
    # the cell: our bars, not the Trainer's HTML progress and table
    assert foreign_displays(messages) == []
    assert train["id"] in job_displays(messages)


async def test_cancel_stops_the_trainer_through_should_training_stop(
    sse_server: SSEServer, kernel: KernelSession
) -> None:
    assert errors(await kernel.execute(TINY_BERT, timeout=120)) == []
    msg_id = kernel.start(
        _trainer(4000, 1, 1) + "result = trainer.train()\n"
        "print('stopped at', trainer.state.global_step, 'of', trainer.state.max_steps)\n"
    )
    await cancel_when_running(sse_server, "Trainer.train", timeout=120)
    messages = await until_idle(kernel, msg_id, timeout=120)
    # the Trainer's own way out: train() returns, with the model in a clean state
    assert error_names(messages) == []
    out = "".join(m["content"]["text"] for m in messages if m["msg_type"] == "stream")
    assert "stopped at" in out and "of 4000" in out, out
    job = (await settled(sse_server, ["Trainer.train"]))["Trainer.train"]
    assert job["state"] == "cancelled" and 1 <= job["n"] < 4000, job


async def test_datasets_map_with_two_processes(sse_server: SSEServer, kernel: KernelSession) -> None:
    messages = await kernel.execute(
        "%load_ext jupyter_sse\n"
        "from datasets import Dataset\n"
        "ds = Dataset.from_dict({'x': list(range(400))})\n"
        "out = ds.map(lambda row: {'y': row['x'] * 2}, num_proc=2, desc='double')\n"
        "assert out['y'][:3] == [0, 2, 4]\n",
        timeout=120,
    )
    assert errors(messages) == []
    jobs = await settled(sse_server, ["double (num_proc=2)"])
    job = jobs["double (num_proc=2)"]
    assert (job["state"], job["n"], job["total"]) == ("succeeded", 400, 400), job
    assert foreign_displays(messages) == []
    assert job_displays(messages) == {job["id"]}


KERAS = """
%load_ext jupyter_sse
import numpy as np, keras
keras.utils.set_random_seed(0)
x = np.random.rand(64, 4).astype('float32')
y = np.random.rand(64, 1).astype('float32')
model = keras.Sequential([keras.Input((4,)), keras.layers.Dense(8, activation='relu'), keras.layers.Dense(1)])
model.compile(optimizer='sgd', loss='mse', metrics=['mae'])
"""


async def test_keras_fit_evaluate_predict(sse_server: SSEServer, kernel: KernelSession) -> None:
    assert errors(await kernel.execute(KERAS, timeout=120)) == []
    messages = await kernel.execute(
        "history = model.fit(x, y, epochs=2, batch_size=8, validation_split=0.25)\n"
        "model.evaluate(x, y, batch_size=16)\n"
        "model.predict(x, batch_size=32)\n",
        timeout=120,
    )
    assert errors(messages) == []
    jobs = await settled(sse_server, ["Keras fit", "epoch 1/2", "epoch 2/2", "Keras evaluate", "Keras predict"])
    fit = jobs["Keras fit"]
    assert (fit["state"], fit["n"], fit["total"], fit["unit"]) == ("succeeded", 2, 2, "epochs"), fit
    assert fit["message"].startswith("epoch 2/2: ") and "val_loss=" in fit["message"], fit["message"]
    for name in ("epoch 1/2", "epoch 2/2"):
        epoch = jobs[name]
        assert (epoch["state"], epoch["n"], epoch["total"], epoch["parent"]) == ("succeeded", 6, 6, fit["id"])
        assert "loss=" in epoch["message"] and "mae=" in epoch["message"]
    assert (jobs["Keras evaluate"]["state"], jobs["Keras evaluate"]["n"]) == ("succeeded", 4)
    assert (jobs["Keras predict"]["state"], jobs["Keras predict"]["n"]) == ("succeeded", 2)
    # Keras' own Progbar writes nothing: the cell shows our bars only
    out = "".join(m["content"]["text"] for m in messages if m["msg_type"] == "stream")
    assert "\b" not in out and "━" not in out and "Epoch 1/2" not in out, out
    assert foreign_displays(messages) == []
    assert job_displays(messages) == {j["id"] for j in jobs.values()}


async def test_cancel_stops_keras_fit_through_stop_training(sse_server: SSEServer, kernel: KernelSession) -> None:
    assert errors(await kernel.execute(KERAS, timeout=120)) == []
    msg_id = kernel.start(
        "big_x, big_y = np.random.rand(40000, 4).astype('float32'), np.random.rand(40000, 1).astype('float32')\n"
        "history = model.fit(big_x, big_y, epochs=3, batch_size=2)\n"
        "print('epochs run', len(history.history['loss']))\n"
    )
    await cancel_when_running(sse_server, "epoch 1/3", timeout=120)
    messages = await until_idle(kernel, msg_id, timeout=120)
    assert error_names(messages) == []
    out = "".join(m["content"]["text"] for m in messages if m["msg_type"] == "stream")
    assert "epochs run 1" in out, out
    jobs = await settled(sse_server, ["Keras fit", "epoch 1/3"])
    assert jobs["epoch 1/3"]["state"] == "cancelled" and 1 <= jobs["epoch 1/3"]["n"] < 20000
    assert jobs["Keras fit"]["state"] == "cancelled" and "epoch 2/3" not in jobs


LIGHTNING = """
%load_ext jupyter_sse
import warnings
warnings.filterwarnings('ignore')
import torch, lightning as L
from torch.utils.data import DataLoader, TensorDataset
torch.manual_seed(0)

class Tiny(L.LightningModule):
    def __init__(self):
        super().__init__()
        self.layer = torch.nn.Linear(4, 1)
    def training_step(self, batch, batch_idx):
        x, y = batch
        loss = torch.nn.functional.mse_loss(self.layer(x), y)
        self.log('train_loss', loss, prog_bar=True)
        return loss
    def validation_step(self, batch, batch_idx):
        x, y = batch
        self.log('val_loss', torch.nn.functional.mse_loss(self.layer(x), y), prog_bar=True)
    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=0.01)

def loader(n, batch):
    return DataLoader(TensorDataset(torch.rand(n, 4), torch.rand(n, 1)), batch_size=batch)

def trainer(epochs):
    return L.Trainer(max_epochs=epochs, accelerator='cpu', logger=False, enable_checkpointing=False,
                     enable_model_summary=False, num_sanity_val_steps=2)
"""


async def test_lightning_fit_with_validation(sse_server: SSEServer, kernel: KernelSession) -> None:
    assert errors(await kernel.execute(LIGHTNING, timeout=120)) == []
    messages = await kernel.execute(
        "import rich  # installed: Lightning picks its RichProgressBar\n"
        "t = trainer(2)\n"
        "t.fit(Tiny(), loader(32, 8), loader(16, 8))\n"
        "assert type(t.progress_bar_callback).__name__ == 'RichProgressBar'\n",
        timeout=120,
    )
    assert errors(messages) == []
    jobs = await settled(sse_server, ["Lightning fit", "epoch 1/2", "epoch 2/2"])
    fit = jobs["Lightning fit"]
    assert (fit["state"], fit["n"], fit["total"], fit["unit"]) == ("succeeded", 2, 2, "epochs"), fit
    assert "train_loss=" in fit["message"] and "val_loss=" in fit["message"], fit["message"]
    for name in ("epoch 1/2", "epoch 2/2"):
        epoch = jobs[name]
        assert (epoch["state"], epoch["n"], epoch["total"], epoch["parent"]) == ("succeeded", 4, 4, fit["id"])
    validations = [j for j in await _all_jobs(sse_server) if j["name"] == "validation"]
    assert len(validations) == 2, validations  # the sanity check is silent
    epoch_ids = {jobs["epoch 1/2"]["id"], jobs["epoch 2/2"]["id"]}
    for validation in validations:
        assert (validation["state"], validation["n"], validation["total"]) == ("succeeded", 2, 2), validation
        assert validation["parent"] in epoch_ids
    assert foreign_displays(messages) == []
    out = "".join(m["content"]["text"] for m in messages if m["msg_type"] == "stream")
    assert "━" not in out and "it/s" not in out, out


async def test_cancel_stops_lightning_through_should_stop(sse_server: SSEServer, kernel: KernelSession) -> None:
    assert errors(await kernel.execute(LIGHTNING, timeout=120)) == []
    msg_id = kernel.start(
        "t = trainer(3)\nt.fit(Tiny(), loader(20000, 1))\nprint('stopped in epoch', t.current_epoch)\n"
    )
    await cancel_when_running(sse_server, "epoch 1/3", timeout=120)
    messages = await until_idle(kernel, msg_id, timeout=120)
    assert error_names(messages) == []
    out = "".join(m["content"]["text"] for m in messages if m["msg_type"] == "stream")
    assert "stopped in epoch" in out, out
    jobs = await settled(sse_server, ["Lightning fit", "epoch 1/3"])
    assert jobs["epoch 1/3"]["state"] == "cancelled" and 1 <= jobs["epoch 1/3"]["n"] < 20000
    assert jobs["Lightning fit"]["state"] == "cancelled" and "epoch 2/3" not in jobs


async def test_lightning_tqdm_progress_bar(sse_server: SSEServer, kernel: KernelSession) -> None:
    # the bar Lightning uses when rich is not installed, chosen explicitly here
    assert errors(await kernel.execute(LIGHTNING, timeout=120)) == []
    messages = await kernel.execute(
        "from lightning.pytorch.callbacks import TQDMProgressBar\n"
        "t = L.Trainer(max_epochs=1, accelerator='cpu', logger=False, enable_checkpointing=False,\n"
        "              enable_model_summary=False, num_sanity_val_steps=0, callbacks=[TQDMProgressBar()])\n"
        "t.fit(Tiny(), loader(24, 8))\n",
        timeout=120,
    )
    assert errors(messages) == []
    jobs = await settled(sse_server, ["Lightning fit", "epoch 1/1"])
    assert (jobs["Lightning fit"]["state"], jobs["Lightning fit"]["n"]) == ("succeeded", 1)
    epoch = jobs["epoch 1/1"]
    assert (epoch["state"], epoch["n"], epoch["total"]) == ("succeeded", 3, 3), epoch
    assert foreign_displays(messages) == []
    assert not any("it/s" in m["content"].get("text", "") for m in messages if m["msg_type"] == "stream")
