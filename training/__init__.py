"""Training runner, in the shape of TF-GNN's runner (`tensorflow_gnn/runner`).

    inputs.py    Inputs: the run's tf.data pipelines (a DatasetProvider)
    run_log.py   scalars to TensorBoard / train_log.jsonl, the eval history
    loop.py      the training loop: checkpoints, resume, divergence, evaluation
    run.py       run(...) -> RunResult: the modes' phases, the export hook, the CLI

The task and its losses are the model's (`models.e2e_grec.E2EGRec.train_step`,
TFRS's one extension point); the mode object (`models.modes`) decides what
each of e2e / two_stage / no_graph does.
"""
