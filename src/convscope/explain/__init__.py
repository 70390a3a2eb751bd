"""What a trained network looks at: attribution methods, feature maps, convolution from scratch, and how far
an explanation can be trusted (pointing game, deletion, model randomisation)."""
