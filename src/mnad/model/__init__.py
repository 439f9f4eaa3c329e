from mnad.model.memory import Memory
from mnad.model.mnad import MNAD, MNADOutput
from mnad.model.unet import Decoder, Encoder

__all__ = ["MNAD", "MNADOutput", "Memory", "Encoder", "Decoder"]
