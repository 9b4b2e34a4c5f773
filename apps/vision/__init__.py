"""The vision service: faces, text in images and image quality."""
