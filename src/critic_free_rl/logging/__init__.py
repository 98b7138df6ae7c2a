"""Run logging: TensorBoard, metrics.jsonl, phase timers and summary.json."""
