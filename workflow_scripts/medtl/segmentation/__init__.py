"""SAM (segment-anything) fine-tuned with box prompts, with FT or SPFT.

- ``sam``:        image encoders (registry), building SAM at any input size, loading a checkpoint
                  made for another size (position embeddings resized), encoder units, forward pass;
- ``prompts``:    box prompts from ground-truth masks, with jitter;
- ``metrics``:    Dice score and the Dice + BCE loss;
- ``strategies``: the registered strategies (ft, spft) and their settings;
- ``trainer``:    the loop: stages, differential learning rates, EMA, cosine, resumable checkpoints;
- ``train``:      one (dataset, model, strategy, seed) job: training, evaluation, predictions;
- ``report``:     Dice tables and mask overlay figures.
"""
