"""Class activation maps: guided cropping (GCM), extraction and the inpainting extension (IEM)."""
