"""Predictors: causal models that give each voxel an integer prediction and a scale bucket."""
