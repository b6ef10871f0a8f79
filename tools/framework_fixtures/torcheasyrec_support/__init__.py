"""What it takes to run TorchEasyRec's MaskNet here, and nothing more.

checkout.py imports TorchEasyRec from a git checkout, unmodified, as the
package `tzrec`, with its protos compiled by protoc into a scratch folder;
standins/ holds our own minimal torchrec and torchmetrics (neither can be
installed here); placeholders.py stands for the packages TorchEasyRec imports
but a MaskNet never uses, and fails generation if one is used after all.
"""
