"""Networks: timm backbones and the heads built on them."""
