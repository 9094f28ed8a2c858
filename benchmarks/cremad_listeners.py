"""A speech model on CREMA-D against what its listeners heard, not only what the actors meant.

CREMA-D's crowd rated every recording from the voice alone (``summaryTable.csv``,
kept by the loader as ``voice_vote``). Each recording is scored as
``analyze`` scores a file and compared with the intended emotion, with the
listeners' majority (beside the share that "always neutral" would get), and,
on the recordings whose majority heard what was meant, per-class recall.

    python benchmarks/cremad_listeners.py --model runs/masks/loco_cremad/model.keras --data PATH/cremad [--fold 0]
"""
from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np

from multimodal.audio import AudioModel
from multimodal.config import EMOTIONS
from training.evaluate import recording_probabilities, seven_classes
from training.speech_datasets import load_speech_corpus


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--model", type=Path, required=True)
    parser.add_argument("--data", type=Path, required=True, help="CREMA-D's folder")
    parser.add_argument("--fold", type=int, help="only the actors of this fold (default: all)")
    args = parser.parse_args(argv)
    items = [u for u in load_speech_corpus(args.data) if u.corpus == "cremad" and args.fold in (None, u.fold)]
    model = AudioModel(args.model)
    labels, dists, _ = recording_probabilities(model, items)["cremad"]
    meant, probs = seven_classes(np.array(labels), np.array(dists), model.card.labels)
    pred = probs.argmax(1)
    heard = np.array([EMOTIONS.index(u.info["voice_vote"]) if u.info.get("voice_vote") in EMOTIONS else -1
                      for u in items])
    voted, clear = heard >= 0, heard == meant
    neutral = EMOTIONS.index("neutral")
    recall = {e: float(np.mean(pred[clear & (meant == i)] == i)) for i, e in enumerate(EMOTIONS) if (clear & (meant == i)).any()}
    result = {"n": len(items), "against_intended": float(np.mean(pred == meant)),
              "against_listeners": float(np.mean(pred[voted] == heard[voted])), "n_voted": int(voted.sum()),
              "always_neutral_against_listeners": float(np.mean(heard[voted] == neutral)),
              "heard_as_meant": int(clear.sum()), "recall_where_heard_as_meant": recall,
              "uar_where_heard_as_meant": float(np.mean(list(recall.values())))}
    print(json.dumps(result, indent=1))
    return result


if __name__ == "__main__":
    main()
