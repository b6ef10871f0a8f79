"""Writes one framework fixture: what a framework's own code produced.

A fixture is a folder tests/fixtures/frameworks/<framework>/<case>/ holding

    meta.json     the framework, its repository and commit, what the case
                  covers, the arguments of tools/import_model.py (file names
                  relative to the folder), and either nothing more (the
                  import must serve the framework's scores) or
                  "refused_with" (the import must fail with that text)
    <files>       the checkpoint and configuration files the framework wrote
    cases.binpb   a masknet.testing.v1.ParityFixture: requests made from the
                  framework's inputs, each with the framework's own scores as
                  the expected response (tasks in the imported model's
                  order, our task names)

tests/framework_import_check.py imports, serves and checks every fixture.
"""

import json
import os
import shutil

from masknet_tools.protos import fixture_pb2
from masknet_tools.protos import ranker_pb2

REPOSITORIES = {
    "the-algorithm-ml": "https://github.com/twitter/the-algorithm-ml",
    "fuxictr": "https://github.com/reczoo/FuxiCTR",
    "torcheasyrec": "https://github.com/alibaba/TorchEasyRec",
}


def expected_response(tasks, candidate_ids, scores):
    """A RankResponse of `scores` ([candidate][task] floats) for `tasks`."""
    response = ranker_pb2.RankResponse(tasks=list(tasks))
    for candidate_id, row in zip(candidate_ids, scores):
        if len(row) != len(tasks):
            raise ValueError(f"{len(row)} scores for {len(tasks)} tasks")
        response.candidates.add(id=candidate_id, scores=[float(s) for s in row])
    return response


def write_case(out_root, framework, commit, case, description, files,
               import_args, cases=(), refused_with=None):
    """Writes tests/fixtures/frameworks/<framework>/<case>/ under `out_root`.

    Args:
      out_root: the folder of all frameworks' fixtures.
      framework: "the-algorithm-ml", "fuxictr" or "torcheasyrec".
      commit: the framework's commit that produced the files.
      case: the case's folder name.
      description: what the case covers, in a sentence.
      files: file name -> bytes, written into the folder.
      import_args: tools/import_model.py arguments besides --from,
        --model_root and --model_name; a file of `files` is named by its
        bare name (the check makes it a path).
      cases: (description, RankRequest, RankResponse) triples; the
        request's model_name is left empty (the check sets it).
      refused_with: for a model the import must refuse, the text its
        message must hold.
    """
    if framework not in REPOSITORIES:
        raise ValueError(f"unknown framework {framework!r}")
    if bool(cases) == bool(refused_with):
        raise ValueError(f"{case}: give scores to match or a refusal, not "
                         "both or neither")
    folder = os.path.join(out_root, framework, case)
    shutil.rmtree(folder, ignore_errors=True)
    os.makedirs(folder)
    for name, data in files.items():
        with open(os.path.join(folder, name), "wb") as f:
            f.write(data)
    meta = {
        "framework": framework,
        "repository": REPOSITORIES[framework],
        "commit": commit,
        "description": description,
        "import_args": list(import_args),
    }
    if refused_with:
        meta["refused_with"] = refused_with
    with open(os.path.join(folder, "meta.json"), "w") as f:
        json.dump(meta, f, indent=2)
        f.write("\n")
    if cases:
        fixture = fixture_pb2.ParityFixture()
        for text, request, response in cases:
            fixture.cases.add(description=text, request=request,
                              expected=response)
        with open(os.path.join(folder, "cases.binpb"), "wb") as f:
            f.write(fixture.SerializeToString(deterministic=True))
    return folder
