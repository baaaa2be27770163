"""Facts shared across the package: Cityscapes train classes and ImageNet normalisation."""

NUM_CLASSES = 19
IGNORE_INDEX = 255

# torchvision's ImageNet statistics, used by every encoder that was pretrained on ImageNet.
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)

# Synboost's default network input (height, width).
DEFAULT_INPUT_SIZE = (256, 512)

# Largest channel-width multiplier of the dissimilarity network accepted from a config or checkpoint: the paper's
# network is width 1; a forged width of 200 would allocate gigabytes before any check of the weights.
MAX_MODEL_WIDTH = 4.0
