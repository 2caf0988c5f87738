"""TensorFlow adapters: the Keras callback, the graph-mode SessionRunHook, the example Keras trainer
and the TFLite export. The only package (with edgefed/lite.py) that imports TensorFlow; importing
`edgefed.tf` itself does not, its submodules do.
"""
