"""Detection metrics: VOC mAP at `overlap_threshold` (GluonCV semantics), COCO mAP."""
