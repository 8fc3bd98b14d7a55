"""Reading and writing slides, label images and patch stores.

:mod:`wsi_seg.io.slide` is the only module that talks to OpenSlide; everything
else asks a :class:`~wsi_seg.io.slide.Slide` for pixels in physical units (mpp).
"""
