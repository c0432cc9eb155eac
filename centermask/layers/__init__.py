from .deform_conv import DeformConv, DeformConvPack, ModulatedDeformConv, ModulatedDeformConvPack

__all__ = ["DeformConv", "DeformConvPack", "ModulatedDeformConv", "ModulatedDeformConvPack"]
