"""Measure dlcli's training speed against the standard recipe and the compute floor, side by side.

    python scripts/bench.py                       # CPU: mlp, lenet, alexnet; start-up; memory
    python scripts/bench.py --device cuda         # the same on a GPU (adds bf16 + channels_last rows)
    python scripts/bench.py --tta                 # time to accuracy of the experiment presets
    python scripts/bench.py --tiny --json b.json  # a few seconds, for the tests
    python scripts/bench.py --ddp                 # data parallel: 1 process against several
    python scripts/bench.py --storage             # data.storage=disk against memory; cache build processes
    python scripts/bench.py --augment --models resnet  # data.policy and data.erasing against none

For each model, on its dataset's shape (MNIST for mlp and lenet, CIFAR-10 for alexnet), one
process times, with the same model, batch, optimizer (SGD, momentum 0.9) and threads:
  dlcli   - dlcli's own training loop (Trainer.train_epoch on device-resident uint8 data);
  recipe  - torchvision dataset + ToTensor/Normalize + DataLoader, the usual tutorial loop;
  floor   - one resident batch, forward + backward + step only: what the model itself costs.
All three step with torch.optim.SGD (fused on CUDA).
Rounds alternate between the three so that machine noise hits them alike; the median counts.
Real MNIST is used when found (data.root / DLCLI_DATA / ../shared/data), synthetic data of the
same shape otherwise (always for CIFAR-10 here).
"""

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from dlcli.data import DataBundle, Split  # noqa: E402
from dlcli.data.builtin import IMAGE_SETS, load_images  # noqa: E402
from dlcli.losses import CrossEntropy  # noqa: E402
from dlcli.models import build_model  # noqa: E402
from dlcli.optim import build_optimizer, build_schedule  # noqa: E402
from dlcli.regularization import NoPenalty  # noqa: E402
from dlcli.settings import (  # noqa: E402
    AlexNetSettings,
    LeNetSettings,
    MLPSettings,
    ResNetSettings,
    SGDSettings,
    TrainerSettings,
)
from dlcli.trainer import Trainer, evaluate  # noqa: E402

MODELS = {
    "mlp": (MLPSettings(depth=2, width=512, dropout=0.0), "mnist"),
    "lenet": (LeNetSettings(activation="relu", pooling="max"), "mnist"),
    "alexnet": (AlexNetSettings(width=0.25), "cifar10"),
    "resnet": (ResNetSettings(), "mnist"),  # its defaults, ResNet-14 of width 16
}
MEAN_STD = {"mnist": ([0.1307], [0.3081]), "cifar10": ([0.4914, 0.4822, 0.4465], [0.2470, 0.2435, 0.2616])}


def find_data_root() -> Path | None:
    for candidate in (os.environ.get("DLCLI_DATA"), REPO.parent / "shared" / "data", REPO / "data"):
        if candidate and (Path(candidate) / "MNIST" / "raw" / "train-images-idx3-ubyte").is_file():
            return Path(candidate)
    return None


def images(dataset: str, n: int, root: Path | None) -> tuple[torch.Tensor, torch.Tensor, str]:
    """n uint8 images of the dataset's shape: the real ones where present, else random ones."""
    if dataset == "mnist" and root is not None:
        x, y = load_images("mnist", str(root), train=True, download=False)
        reps = -(-n // len(y))
        return x.repeat(reps, 1, 1, 1)[:n], y.repeat(reps)[:n], "real"
    gen = torch.Generator().manual_seed(0)
    shape = IMAGE_SETS[dataset].shape
    return (
        torch.randint(0, 256, (n, *shape), generator=gen, dtype=torch.uint8),
        torch.randint(0, 10, (n,), generator=gen),
        "synthetic",
    )


def bundle(x: torch.Tensor, y: torch.Tensor, dataset: str, device: torch.device) -> DataBundle:
    mean, std = MEAN_STD[dataset]
    std_t = torch.tensor(std).view(1, -1, 1, 1)
    split = Split(x.to(device), y.to(device))
    return DataBundle(
        train=split,
        val=split,
        test=split,
        input_shape=tuple(x.shape[1:]),
        classes=tuple(str(i) for i in range(10)),
        scale=(1 / (255 * std_t)).to(device),
        shift=(torch.tensor(mean).view(1, -1, 1, 1) / std_t).to(device),
        augment=False,
    )


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


def sgd_trainer(model, data: DataBundle, batch: int, steps: int, precision="32", channels_last=False) -> Trainer:
    """dlcli's Trainer as every contender here steps: SGD with momentum 0.9, cross-entropy, no penalty."""
    optimizer = build_optimizer(SGDSettings(lr=0.01, momentum=0.9, nesterov=False), model, data.train.y.device)
    return Trainer(
        model=model,
        data=data,
        loss_fn=CrossEntropy(),
        penalty=NoPenalty([]),
        optimizer=optimizer,
        optimizer_target=SGDSettings._target_,
        schedule=build_schedule(None, optimizer, 1, steps),
        settings=TrainerSettings(
            batch_size=batch, progress=False, log_every=50, precision=precision, channels_last=channels_last
        ),
        run_dir=Path(tempfile.mkdtemp()),
        config={},
    )


class Contenders:
    """The three ways of training one model, each able to run `steps` optimizer steps."""

    def __init__(
        self,
        name: str,
        device: torch.device,
        batch: int,
        steps: int,
        root: Path | None,
        precision: str = "32",
        channels_last: bool = False,
    ):
        settings, dataset = MODELS[name]
        self.name, self.device, self.batch, self.steps, self.dataset = name, device, batch, steps, dataset
        x, y, self.source = images(dataset, batch * steps, root)
        self.data = bundle(x, y, dataset, device)
        self.cpu_x, self.cpu_y = x, y
        torch.manual_seed(0)
        self.model = build_model(settings, self.data.input_shape, 10).to(device)
        if channels_last and device.type == "cuda" and len(self.data.input_shape) == 3:
            self.model = self.model.to(memory_format=torch.channels_last)
        self.trainer = sgd_trainer(self.model, self.data, batch, steps, precision, channels_last)
        self.loss_fn = self.trainer.loss_fn
        self.reference = torch.optim.SGD(
            self.model.parameters(), lr=0.01, momentum=0.9, fused=device.type == "cuda" or None
        )
        self.precision = precision
        self.epoch = 0

    def dlcli(self) -> float:
        self.epoch += 1
        sync(self.device)
        start = time.perf_counter()
        self.trainer.train_epoch(self.epoch)
        sync(self.device)
        return self.batch * self.steps / (time.perf_counter() - start)

    def floor(self) -> float:
        x, y = next(iter(self._floor_batch()))
        self.model.train()
        sync(self.device)
        start = time.perf_counter()
        for _ in range(self.steps):
            with self.trainer.autocast():
                loss = self.loss_fn(self.model(x), y)
            self.reference.zero_grad(set_to_none=True)
            loss.backward()
            self.reference.step()
        sync(self.device)
        return self.batch * self.steps / (time.perf_counter() - start)

    def _floor_batch(self):
        x = self.data.inputs(self.data.train.head(self.batch))
        if self.trainer.settings.channels_last and x.ndim == 4 and self.device.type == "cuda":
            x = x.contiguous(memory_format=torch.channels_last)
        yield x, self.data.train.y[: self.batch]

    def recipe(self) -> float:
        from torch.utils.data import DataLoader

        loader = DataLoader(
            self._recipe_dataset(),
            batch_size=self.batch,
            shuffle=True,
            num_workers=0,
            pin_memory=self.device.type == "cuda",
        )
        self.model.train()
        sync(self.device)
        start = time.perf_counter()
        for x, y in loader:
            x, y = x.to(self.device, non_blocking=True), y.to(self.device, non_blocking=True)
            loss = self.loss_fn(self.model(x), y)
            self.reference.zero_grad()
            loss.backward()
            self.reference.step()
        sync(self.device)
        return len(self.cpu_y) / (time.perf_counter() - start)

    def _recipe_dataset(self):
        """The tutorial pipeline: PIL image per sample -> ToTensor -> Normalize."""
        from PIL import Image
        from torchvision import transforms

        mean, std = MEAN_STD[self.dataset]
        transform = transforms.Compose([transforms.ToTensor(), transforms.Normalize(mean, std)])
        x, y = self.cpu_x, self.cpu_y
        mode = "L" if x.shape[1] == 1 else "RGB"

        class PILImages(torch.utils.data.Dataset):  # what torchvision's MNIST/CIFAR10 __getitem__ do
            def __len__(self):
                return len(y)

            def __getitem__(self, i):
                img = x[i, 0].numpy() if mode == "L" else x[i].permute(1, 2, 0).numpy()
                return transform(Image.fromarray(img, mode=mode)), int(y[i])

        return PILImages()

    def evaluation(self) -> float:
        sync(self.device)
        start = time.perf_counter()
        evaluate(self.model, self.data, "train", self.loss_fn, 1000, self.trainer.autocast)
        sync(self.device)
        return len(self.cpu_y) / (time.perf_counter() - start)


def bench_model(name, device, batch, steps, rounds, root, precision="32", channels_last=False) -> dict:
    c = Contenders(name, device, batch, steps, root, precision, channels_last)
    c.dlcli(), c.floor()  # warm-up: allocator, cuDNN autotuning, first-call costs
    runs = {"dlcli": [], "floor": [], "recipe": []}
    for _ in range(rounds):
        runs["dlcli"].append(c.dlcli())
        runs["floor"].append(c.floor())
        if precision == "32" and not channels_last:
            runs["recipe"].append(c.recipe())
    med = {k: statistics.median(v) for k, v in runs.items() if v}
    row = {
        "model": name,
        "device": str(device),
        "precision": precision,
        "channels_last": channels_last,
        "data": f"{c.dataset} ({c.source})",
        "batch": batch,
        "images": batch * steps,
        "dlcli_images_per_s": round(med["dlcli"], 1),
        "floor_images_per_s": round(med["floor"], 1),
        "eval_images_per_s": round(c.evaluation(), 1),
        "dlcli_over_floor": round(med["dlcli"] / med["floor"], 3),
    }
    if "recipe" in med:
        row["recipe_images_per_s"] = round(med["recipe"], 1)
        row["dlcli_over_recipe"] = round(med["dlcli"] / med["recipe"], 3)
    return row


def run_child(args: list[str], cwd: Path) -> tuple[float, dict, int]:
    """Run `dlcli ARGS`; its wall seconds, the peak RSS it reported (MB) and its exit code.

    The peak comes from the run's summary.json (the kernel's high-water mark of its own memory):
    wait4's ru_maxrss would also count this bench's memory, shared with the child between fork and exec.
    """
    start = time.perf_counter()
    proc = subprocess.run(
        [sys.executable, "-m", "dlcli.cli", *args],
        cwd=cwd,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    wall = time.perf_counter() - start
    if proc.returncode != 0:
        sys.stderr.write(proc.stderr)
    run_dir = next((a.split("=", 1)[1] for a in args if a.startswith("hydra.run.dir=")), None)
    summary = cwd / run_dir / "summary.json" if run_dir else None
    peak = json.loads(summary.read_text()).get("peak_rss_mb") if summary and summary.is_file() else None
    return wall, {"peak_rss_mb": peak}, proc.returncode


def startup(root: Path | None, tiny: bool, device: str) -> dict:
    """`dlcli --help` wall time; start to first step and peak memory of a real LeNet-5 run."""
    with tempfile.TemporaryDirectory() as tmp:
        helps = []
        for _ in range(2 if tiny else 5):
            start = time.perf_counter()
            subprocess.run([sys.executable, "-m", "dlcli.cli", "--help"], check=True, capture_output=True)
            helps.append(time.perf_counter() - start)
        data = ["data=mnist", f"data.root={root}"] if root else ["data.name=spirals"]
        model = "model=lenet" if root else "model=mlp"
        subset = ["data.subset=2000"] if tiny and root else []
        args = [
            "train",
            model,
            *data,
            *subset,
            "trainer.epochs=1",
            "trainer.progress=false",
            f"trainer.device={device}",
            "hydra.run.dir=run",
        ]
        if not tiny:  # the timed run then reads the data cache, as every run after a first one does
            run_child([*args[:-1], "hydra.run.dir=warm-up"], Path(tmp))
        wall, usage, code = run_child(args, Path(tmp))
        summary = json.loads((Path(tmp) / "run" / "summary.json").read_text()) if code == 0 else {}
        return {
            "help_seconds": round(statistics.median(helps), 3),
            "train_run": " ".join(args[1:-1]),
            "start_to_first_step_seconds": summary.get("startup_seconds"),
            "one_epoch_wall_seconds": round(wall, 2),
            **usage,
        }


PRESETS = {"lenet_mnist_fast": 0.990, "mlp_mnist_fast": 0.980}


def time_to_accuracy(root: Path | None, device: str) -> list[dict]:
    rows = []
    for preset, target in PRESETS.items():
        with tempfile.TemporaryDirectory() as tmp:
            args = ["train", f"experiment={preset}", "trainer.progress=false", f"trainer.device={device}"]
            args += [f"data.root={root}"] if root else []
            run_child([*args, "hydra.run.dir=warm", "trainer.epochs=1"], Path(tmp))  # fills the data cache
            wall, usage, code = run_child([*args, "hydra.run.dir=run"], Path(tmp))
            summary = json.loads((Path(tmp) / "run" / "summary.json").read_text()) if code == 0 else {}
            rows.append(
                {
                    "preset": preset,
                    "target": target,
                    "test_acc": summary.get("test_acc"),
                    "reached": (summary.get("test_acc") or 0) >= target,
                    "wall_seconds": round(wall, 2),
                    "epochs": summary.get("epochs"),
                    **usage,
                }
            )
    return rows


def data_parallel(root: Path | None, device: str, rounds: int, tiny: bool) -> dict:
    """Training images/s of one `dlcli train` run in 1 process and in several (trainer.devices):
    on CPU 1 process x 2 threads against 2 processes x 1 thread; on CUDA 1, 2, ... GPUs, one
    process each. Read from each run's metrics.jsonl (epochs after the first); rounds alternate
    between the process counts and the median counts."""
    gpus = torch.cuda.device_count() if device == "cuda" else 0
    counts = list(range(1, gpus + 1)) if gpus else [1, 2]
    cores = os.cpu_count() or 1
    data = ["data=mnist", f"data.root={root}"] if root else ["data.name=spirals", "model=mlp"]
    args = [
        "train",
        *(["model=lenet"] if root else []),
        *data,
        f"data.subset={2000 if tiny else 24000}",
        f"trainer.epochs={2 if tiny else 3}",
        "trainer.progress=false",
        f"trainer.device={device}",
    ]
    rates: dict[int, list[float]] = {n: [] for n in counts}
    with tempfile.TemporaryDirectory() as tmp:
        run_child([*args, "hydra.run.dir=warm-up", "trainer.epochs=1"], Path(tmp))  # fills the data cache
        for r in range(rounds):
            for n in counts:
                threads = [f"trainer.threads={max(1, cores // n)}"] if not gpus else []
                _, _, code = run_child([*args, f"trainer.devices={n}", *threads, f"hydra.run.dir=r{r}-{n}"], Path(tmp))
                if code == 0:
                    rows = [json.loads(line) for line in (Path(tmp) / f"r{r}-{n}" / "metrics.jsonl").open()]
                    rates[n].append(statistics.median(row["samples_per_second"] for row in rows[1:]))
    one = statistics.median(rates[1])
    table = []
    for n in counts:
        rate = statistics.median(rates[n])
        # on CPU the processes share the same cores as the one process's threads: no efficiency to speak of
        table.append(
            {
                "processes": n,
                "threads_each": max(1, cores // n) if not gpus else None,
                "images_per_s": round(rate, 1),
                "speedup": round(rate / one, 3),
                "efficiency": round(rate / one / n, 3) if gpus else None,
            }
        )
    return {"run": "dlcli train " + " ".join(args[1:]), "device": device, "rows": table}


def alternating_epochs(trainers: dict[str, Trainer], rounds: int, dev: torch.device, then=None) -> dict[str, list]:
    """Training images/s of each trainer's epoch, the trainers taking turns so that the machine's
    noise hits them alike; round 0 warms the page cache and the allocator and is not counted.
    `then(name, trainer)` runs after each counted epoch."""
    rates = {name: [] for name in trainers}
    for r in range(rounds + 1):
        for name, trainer in trainers.items():
            sync(dev)
            start = time.perf_counter()
            trainer.train_epoch(r + 1)
            sync(dev)
            if r:
                rates[name].append(len(trainer.data.train) / (time.perf_counter() - start))
                if then is not None:
                    then(name, trainer)
    return rates


def storage(root: Path | None, device: str, batch: int, steps: int, rounds: int, tiny: bool) -> dict:
    """data.storage=disk against memory, side by side: training images/s of LeNet-5 on MNIST (the
    page cache warm: each path trains a round before the timed ones; rounds alternate, the median
    counts); the peak RssAnon of a whole `dlcli train` run on each path; and images/s of building an
    image folder's cache with 1 decoding process against one per core."""
    from dlcli.data import load_data
    from dlcli.data.folders import load_image_folder
    from dlcli.machine import cores as machine_cores
    from dlcli.machine import peak_rss_anon
    from dlcli.settings import ImageDataSettings

    if root is None:
        return {"skipped": "needs MNIST (data.root, DLCLI_DATA or ../shared/data)"}
    dev = torch.device(device)
    trainers = {}
    for name in ("memory", "disk"):
        spec = ImageDataSettings(root=str(root), download=False, augment=False, subset=batch * steps, storage=name)
        data = load_data(spec, 0, 1 / 11, dev)
        torch.manual_seed(0)
        trainers[name] = sgd_trainer(build_model(MODELS["lenet"][0], data.input_shape, 10).to(dev), data, batch, steps)
    med = {k: statistics.median(v) for k, v in alternating_epochs(trainers, rounds, dev).items()}
    peaks = {}
    with tempfile.TemporaryDirectory() as tmp:
        for name in ("memory", "disk"):
            args = ["model=lenet", "data=mnist", f"data.root={root}", "data.download=false", "trainer.epochs=1"]
            args += [f"data.storage={name}", f"trainer.device={device}", "trainer.progress=false"]
            args += [f"data.subset={2000 if tiny else 54000}", f"hydra.run.dir={name}"]
            proc = subprocess.Popen(
                [sys.executable, "-m", "dlcli.cli", "train", *args], cwd=tmp, stdout=subprocess.DEVNULL
            )
            peaks[name] = round(peak_rss_anon(proc) / 2**20, 1)
        build = {1: [], 0: []}
        n_images = 200 if tiny else 4000
        folder = _image_folder(Path(tmp) / "folder", n_images)
        for r in range(rounds):
            for workers in build:
                os.environ["DLCLI_CACHE"] = str(Path(tmp) / f"cache-{r}-{workers}")
                start = time.perf_counter()
                load_image_folder(folder, image_size=64, workers=workers)
                build[workers].append(n_images / (time.perf_counter() - start))
    cores = machine_cores()
    one, all_cores = statistics.median(build[1]), statistics.median(build[0])
    return {
        "training": f"lenet on MNIST ({batch * steps} images), batch {batch}, {device}",
        "memory_images_per_s": round(med["memory"], 1),
        "disk_images_per_s": round(med["disk"], 1),
        "disk_over_memory": round(med["disk"] / med["memory"], 3),
        "peak_rss_anon_mb": peaks,
        "build": f"{n_images} JPEG photos of 256x256, resized to 64x64",
        "build_1_process_images_per_s": round(one, 1),
        f"build_{cores}_processes_images_per_s": round(all_cores, 1),
        "build_speedup": round(all_cores / one, 3),
    }


def augmentation(root: Path | None, device: str, model: str, batch: int, steps: int, rounds: int) -> dict:
    """data.policy and data.erasing against no augmentation, side by side: training images/s of `model`
    on Fashion-MNIST (rounds alternate, the median counts), and images/s of the transform alone."""
    from dlcli.data import load_data
    from dlcli.settings import FashionMNISTSettings

    if root is None or not (root / "FashionMNIST" / "raw").is_dir():
        return {"skipped": "needs Fashion-MNIST (data.root, DLCLI_DATA or ../shared/data)"}
    dev = torch.device(device)
    variants = {
        "none": {},
        "randaugment": {"policy": "randaugment"},
        "trivialaugment": {"policy": "trivialaugment"},
        "autoaugment": {"policy": "autoaugment"},
        "erasing 0.25": {"erasing": 0.25},
    }
    trainers = {}
    for name, keys in variants.items():
        spec = FashionMNISTSettings(root=str(root), download=False, subset=batch * steps, **keys)
        data = load_data(spec, 0, 1 / 11, dev)
        torch.manual_seed(0)
        built = build_model(MODELS[model][0], data.input_shape, 10).to(dev)
        trainers[name] = sgd_trainer(built, data, batch, steps)
    alone = {name: [] for name in variants if name != "none"}

    def transform_alone(name: str, trainer: Trainer) -> None:
        if name in alone:
            start = time.perf_counter()
            trainer.data.transform(trainer.data.train.x[:batch])
            sync(dev)
            alone[name].append(batch / (time.perf_counter() - start))

    train = alternating_epochs(trainers, rounds, dev, then=transform_alone)
    med = {name: statistics.median(v) for name, v in train.items()}
    return {
        "training": f"{model} on Fashion-MNIST ({batch * steps} images), batch {batch}, {device}",
        "train_images_per_s": {name: round(v, 1) for name, v in med.items()},
        "over_none": {name: round(v / med["none"], 3) for name, v in med.items()},
        "transform_images_per_s": {name: round(statistics.median(v), 1) for name, v in alone.items()},
    }


def _image_folder(root: Path, n: int) -> Path:
    """n photos' worth of decoding work: 256x256 RGB JPEGs (noise over a gradient), two classes."""
    import numpy as np
    from PIL import Image

    rng = np.random.default_rng(0)
    grid = np.add.outer(np.arange(256), np.arange(256)).astype(np.uint8)
    for i in range(n):
        folder = root / ("a" if i % 2 else "b")
        folder.mkdir(parents=True, exist_ok=True)
        pixels = (rng.integers(0, 64, (256, 256, 3), dtype=np.uint8) + grid[..., None]).astype(np.uint8)
        Image.fromarray(pixels).save(folder / f"{i}.jpg", quality=90)
    return root


SWEEP = ["-m", "optimizer.lr=0.01,0.001", "optimizer.weight_decay=0,1e-4", "trainer.progress=false"]


def launchers(rounds: int) -> dict:
    """Wall seconds of the same 4-job toy sweep, basic launcher vs joblib with 2 workers, alternating."""
    times = {"basic": [], "joblib": []}
    for _ in range(rounds):
        for name, extra in (("basic", []), ("joblib", ["hydra/launcher=joblib", "hydra.launcher.n_jobs=2"])):
            with tempfile.TemporaryDirectory() as tmp:
                start = time.perf_counter()
                subprocess.run(
                    [sys.executable, "-m", "dlcli.cli", "train", *SWEEP, *extra],
                    cwd=tmp,
                    check=True,
                    capture_output=True,
                )
                times[name].append(time.perf_counter() - start)
    basic, joblib = statistics.median(times["basic"]), statistics.median(times["joblib"])
    return {
        "sweep": "dlcli train " + " ".join(SWEEP),
        "basic_seconds": round(basic, 2),
        "joblib_seconds": round(joblib, 2),
        "basic_over_joblib": round(basic / joblib, 2),
    }


def print_tables(result: dict) -> None:
    from rich.console import Console
    from rich.table import Table

    console = Console(width=None if sys.stdout.isatty() else 140)
    if result.get("models"):
        t = Table(
            title=f"training images/s, {result['device']} ({result['threads']} threads), median of "
            f"{result['rounds']} rounds"
        )
        for col in (
            "model",
            "data",
            "batch",
            "precision",
            "recipe",
            "dlcli",
            "floor",
            "dlcli/floor",
            "dlcli/recipe",
            "eval",
        ):
            t.add_column(col, justify="right" if col not in ("model", "data") else "left")
        for r in result["models"]:
            prec = r["precision"] + (" + channels_last" if r["channels_last"] else "")
            t.add_row(
                r["model"],
                r["data"],
                str(r["batch"]),
                prec,
                f"{r.get('recipe_images_per_s', 0):,.0f}",
                f"{r['dlcli_images_per_s']:,.0f}",
                f"{r['floor_images_per_s']:,.0f}",
                f"{r['dlcli_over_floor']:.2f}",
                f"{r['dlcli_over_recipe']:.2f}" if "dlcli_over_recipe" in r else "-",
                f"{r['eval_images_per_s']:,.0f}",
            )
        console.print(t)
    if result.get("startup"):
        s = result["startup"]
        console.print(
            f"dlcli --help: {s['help_seconds']:.3f} s; `dlcli train {s['train_run']}`: "
            f"first optimizer step after {s['start_to_first_step_seconds']} s, "
            f"{s['one_epoch_wall_seconds']} s wall, peak RSS {s['peak_rss_mb']} MB"
        )
    if result.get("ddp"):
        d = result["ddp"]
        t = Table(title=f"data parallel, {d['device']}: {d['run']}")
        for col in ("processes", "threads each", "train images/s", "speed-up", "efficiency"):
            t.add_column(col, justify="right")
        for r in d["rows"]:
            t.add_row(
                str(r["processes"]),
                str(r["threads_each"] or "-"),
                f"{r['images_per_s']:,.0f}",
                f"{r['speedup']:.2f}",
                f"{r['efficiency']:.2f}" if r["efficiency"] is not None else "-",
            )
        console.print(t)
    if result.get("storage"):
        s = result["storage"]
        if "skipped" in s:
            console.print(f"storage: skipped, {s['skipped']}")
        else:
            cores = next(k for k in s if k.startswith("build_") and k.endswith("_processes_images_per_s"))
            console.print(
                f"data.storage, {s['training']}: memory {s['memory_images_per_s']:,.0f} images/s, disk "
                f"{s['disk_images_per_s']:,.0f} ({s['disk_over_memory']:.2f}x); peak RssAnon of a whole run "
                f"(MB): {s['peak_rss_anon_mb']}\ncache build, {s['build']}: 1 process "
                f"{s['build_1_process_images_per_s']:,.0f} images/s, {cores.split('_')[1]} processes "
                f"{s[cores]:,.0f} ({s['build_speedup']:.2f}x)"
            )
    if result.get("augmentation"):
        s = result["augmentation"]
        if "skipped" in s:
            console.print(f"augmentation: skipped, {s['skipped']}")
        else:
            t = Table(title=f"data.policy and data.erasing, {s['training']}")
            for col in ("augmentation", "train images/s", "vs none", "transform alone, images/s"):
                t.add_column(col, justify="left" if col == "augmentation" else "right")
            for name, rate in s["train_images_per_s"].items():
                alone = s["transform_images_per_s"].get(name)
                t.add_row(name, f"{rate:,.0f}", f"{s['over_none'][name]:.2f}", f"{alone:,.0f}" if alone else "-")
            console.print(t)
    if result.get("launchers"):
        s = result["launchers"]
        console.print(
            f"4-job toy sweep: basic launcher {s['basic_seconds']} s, joblib n_jobs=2 "
            f"{s['joblib_seconds']} s: joblib {s['basic_over_joblib']}x as fast"
        )
    for r in result.get("tta", []):
        console.print(
            f"experiment={r['preset']}: test acc {r['test_acc']} (target {r['target']}) in "
            f"{r['wall_seconds']} s wall for the whole process, {r['epochs']} epochs, "
            f"peak RSS {r['peak_rss_mb']} MB"
        )


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--models", default="mlp,lenet,alexnet")
    parser.add_argument("--batch", type=int, default=128)
    parser.add_argument("--steps", type=int, default=100, help="optimizer steps per timed round")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--threads", type=int, default=0, help="0: one per core")
    parser.add_argument("--tiny", action="store_true", help="a few steps of everything, for tests")
    parser.add_argument("--tta", action="store_true", help="time to accuracy of the experiment presets only")
    parser.add_argument("--launchers", action="store_true", help="basic vs joblib launcher on a toy sweep only")
    parser.add_argument("--ddp", action="store_true", help="data parallel (trainer.devices) against 1 process only")
    parser.add_argument("--storage", action="store_true", help="data.storage=disk against memory only")
    parser.add_argument(
        "--augment", action="store_true", help="data.policy and data.erasing against none only (first of --models)"
    )
    parser.add_argument("--json", type=Path, help="also write the numbers here")
    args = parser.parse_args()
    if args.tiny:
        args.steps, args.rounds, args.batch = 3, 1, 32
    torch.set_num_threads(args.threads or os.cpu_count() or 1)
    device = torch.device(args.device)
    root = find_data_root()
    result = {
        "device": torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu",
        "threads": torch.get_num_threads(),
        "rounds": args.rounds,
        "torch": torch.__version__,
        "models": [],
        "tta": [],
    }
    if args.tta:
        result["tta"] = time_to_accuracy(root, args.device)
    elif args.launchers:
        result["launchers"] = launchers(args.rounds)
    elif args.ddp:
        result["ddp"] = data_parallel(root, args.device, args.rounds, args.tiny)
    elif args.storage:
        result["storage"] = storage(root, args.device, args.batch, args.steps, args.rounds, args.tiny)
    elif args.augment:
        model = args.models.split(",")[0]
        result["augmentation"] = augmentation(root, args.device, model, args.batch, args.steps, args.rounds)
    else:
        for name in args.models.split(","):
            result["models"].append(bench_model(name, device, args.batch, args.steps, args.rounds, root))
            if device.type == "cuda":
                result["models"].append(
                    bench_model(
                        name,
                        device,
                        args.batch,
                        args.steps,
                        args.rounds,
                        root,
                        precision="bf16",
                        channels_last=name != "mlp",
                    )
                )
        result["startup"] = startup(root, args.tiny, args.device)
    result["bench_peak_rss_mb"] = round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)
    print_tables(result)
    if args.json:
        args.json.write_text(json.dumps(result, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
