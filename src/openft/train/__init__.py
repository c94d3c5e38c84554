"""Fine-tuning: spec, tokenization with loss masks, packing, the training loop and its objectives.

Import the submodules you need (`openft.train.spec`, `.loop`, `.objective`, `.sft`, `.dpo`,
`.tokenize`, `.auto`); nothing heavy is imported here, so `import openft.train` stays cheap.
"""
