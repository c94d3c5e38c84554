"""Supervised fine-tuning: spec, tokenization with loss masks, packing, the training loop.

Import the submodules you need (`openft.train.spec`, `.loop`, `.tokenize`, `.auto`); nothing
heavy is imported here, so `import openft.train` stays cheap.
"""
