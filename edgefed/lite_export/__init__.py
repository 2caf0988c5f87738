"""The numpy softmax trainer's model as a .tflite file, written without TensorFlow (docs/tflite.md)."""
