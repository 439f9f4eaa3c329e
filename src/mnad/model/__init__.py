from mnad.model.memory import Memory
from mnad.model.mnad import MNAD, MNADOutput, inference_copy
from mnad.model.unet import Decoder, Encoder

__all__ = ["MNAD", "MNADOutput", "Memory", "Encoder", "Decoder", "inference_copy"]
