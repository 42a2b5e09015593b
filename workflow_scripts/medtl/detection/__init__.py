"""Object detection with Ultralytics (YOLOv8, RT-DETR), fine-tuned with FT or SPFT.

- ``offline``:    environment that keeps Ultralytics from reaching the network (weights, fonts, AMP check);
- ``models``:     detector kinds (registry), their YAML configs, backbone units for the stage schedule;
- ``strategies``: the registered strategies (ft, spft) and their settings;
- ``stages``:     the callbacks that apply SPFT's stages, EMA and their record inside Ultralytics' trainer;
- ``export``:     prepared dense store -> YOLO-format folder (images, labels, data.yaml, label caches);
- ``train``:      one (dataset, model, strategy, seed) job: resumable training, evaluation, predictions;
- ``report``:     comparison tables and box overlay figures.
"""
