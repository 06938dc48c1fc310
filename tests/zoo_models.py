"""Tiny real architectures for tests/test_zoo.py: transformers models built from configs, random weights.

Each builder returns ``(model, inputs)``: ``inputs`` is the kwargs dict of one small batch (also used as
``example_inputs``). Vision models come from transformers too (ResNet, ConvNeXt, ViT, MobileNetV2): timm
is not installable beside the CPU torch (it needs torchvision, whose PyPI wheels are CUDA builds).
"""

from __future__ import annotations

import torch

B, T = 2, 8
VOCAB = 64
LABELS = 5  # != 3 input channels, so the width rule can tell a vision head from a residual block


def _ids(vocab=VOCAB):
    return torch.randint(0, vocab, (B, T), generator=torch.Generator().manual_seed(0))


def _img(size=16):
    return torch.randn(B, 3, size, size, generator=torch.Generator().manual_seed(0))


def gpt2():
    import transformers as tf

    cfg = tf.GPT2Config(
        vocab_size=VOCAB, n_positions=16, n_embd=16, n_layer=2, n_head=2, bos_token_id=0, eos_token_id=0
    )
    return tf.GPT2LMHeadModel(cfg), dict(input_ids=_ids())


def llama():
    import transformers as tf

    cfg = tf.LlamaConfig(
        vocab_size=VOCAB,
        hidden_size=16,
        intermediate_size=32,
        num_hidden_layers=2,
        num_attention_heads=2,
        num_key_value_heads=1,
        tie_word_embeddings=False,
        max_position_embeddings=16,
        bos_token_id=0,
        eos_token_id=0,
        pad_token_id=0,
    )
    return tf.LlamaForCausalLM(cfg), dict(input_ids=_ids())


def _bert_cfg(**kw):
    import transformers as tf

    return tf.BertConfig(
        vocab_size=VOCAB,
        hidden_size=16,
        num_hidden_layers=2,
        num_attention_heads=2,
        intermediate_size=32,
        max_position_embeddings=16,
        pad_token_id=0,
        **kw,
    )


def bert_cls():
    import transformers as tf

    return tf.BertForSequenceClassification(_bert_cfg(num_labels=LABELS)), dict(input_ids=_ids())


def bert_mlm():
    import transformers as tf

    return tf.BertForMaskedLM(_bert_cfg()), dict(input_ids=_ids())


def gptj():
    import transformers as tf

    cfg = tf.GPTJConfig(
        vocab_size=VOCAB, n_positions=16, n_embd=16, n_layer=2, n_head=2, rotary_dim=4, bos_token_id=0, eos_token_id=0
    )
    return tf.GPTJForCausalLM(cfg), dict(input_ids=_ids())


def mixtral():
    import transformers as tf

    cfg = tf.MixtralConfig(
        vocab_size=VOCAB,
        hidden_size=16,
        intermediate_size=32,
        num_hidden_layers=1,
        num_attention_heads=2,
        num_key_value_heads=1,
        num_local_experts=4,
        num_experts_per_tok=2,
        max_position_embeddings=16,
        bos_token_id=0,
        eos_token_id=0,
        pad_token_id=0,
    )
    return tf.MixtralForCausalLM(cfg), dict(input_ids=_ids())


def wav2vec2():
    import transformers as tf

    cfg = tf.Wav2Vec2Config(
        vocab_size=12,
        hidden_size=16,
        num_hidden_layers=1,
        num_attention_heads=2,
        intermediate_size=32,
        conv_dim=(8, 8),
        conv_stride=(5, 2),
        conv_kernel=(10, 3),
        num_conv_pos_embeddings=8,
        num_conv_pos_embedding_groups=2,
    )
    x = torch.randn(B, 200, generator=torch.Generator().manual_seed(0))
    return tf.Wav2Vec2ForCTC(cfg), dict(input_values=x)


def vit():
    import transformers as tf

    cfg = tf.ViTConfig(
        image_size=8,
        patch_size=4,
        num_channels=3,
        hidden_size=16,
        num_hidden_layers=1,
        num_attention_heads=2,
        intermediate_size=32,
        num_labels=LABELS,
    )
    return tf.ViTForImageClassification(cfg), dict(pixel_values=_img(8))


def resnet():
    import transformers as tf

    cfg = tf.ResNetConfig(
        num_channels=3, embedding_size=8, hidden_sizes=[8, 16], depths=[1, 1], layer_type="basic", num_labels=LABELS
    )
    return tf.ResNetForImageClassification(cfg), dict(pixel_values=_img(16))


def convnext():
    import transformers as tf

    cfg = tf.ConvNextConfig(num_channels=3, num_stages=2, hidden_sizes=[8, 16], depths=[1, 1], num_labels=LABELS)
    return tf.ConvNextForImageClassification(cfg), dict(pixel_values=_img(16))


def mobilenet():
    import transformers as tf

    cfg = tf.MobileNetV2Config(
        num_channels=3, image_size=16, depth_multiplier=0.25, finegrained_output=True, num_labels=LABELS
    )
    return tf.MobileNetV2ForImageClassification(cfg), dict(pixel_values=_img(16))
