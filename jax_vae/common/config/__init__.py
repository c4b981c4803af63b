"""What a run is: the VAEConfig (vae_config), the named presets (presets), how a run executes
(options: TrainOptions, EvalOptions), the model parts its fields configure (parts), and the layer
plans read from a config (architecture: the conv VAE's LayerSpecs; conv_geometry: padding arithmetic).
"""

__all__ = ["vae_config", "presets", "options", "parts", "architecture", "conv_geometry"]
