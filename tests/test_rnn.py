"""The unpacked BiLSTM equals torch's packed bidirectional LSTM on valid frames."""

import torch
from torch import nn

from speechssl.nn.rnn import BiLSTM, reverse_padded


def test_reverse_padded_is_an_involution_keeping_padding():
    x = torch.arange(10.0).view(2, 5, 1)
    lengths = torch.tensor([5, 3])
    r = reverse_padded(x, lengths)
    assert r[0, :, 0].tolist() == [4, 3, 2, 1, 0]
    assert r[1, :, 0].tolist() == [7, 6, 5, 8, 9]
    assert torch.equal(reverse_padded(r, lengths), x)


def test_bilstm_matches_packed_lstm():
    torch.manual_seed(0)
    ours = BiLSTM(6, 5, num_layers=2)
    ref = nn.LSTM(6, 5, num_layers=2, bidirectional=True, batch_first=True)
    with torch.no_grad():  # copy weights: layer l forward/backward -> ref's _l / _l_reverse
        for layer in range(2):
            for suffix, rnn in (("", ours.forward_rnns[layer]), ("_reverse", ours.backward_rnns[layer])):
                for name in ("weight_ih", "weight_hh", "bias_ih", "bias_hh"):
                    getattr(ref, f"{name}_l{layer}{suffix}").copy_(getattr(rnn, f"{name}_l0"))
    x = torch.randn(3, 7, 6)
    lengths = torch.tensor([7, 4, 2])
    packed = nn.utils.rnn.pack_padded_sequence(x, lengths, batch_first=True, enforce_sorted=False)
    expected, _ = nn.utils.rnn.pad_packed_sequence(ref(packed)[0], batch_first=True)
    got = ours(x, lengths)
    for b, n in enumerate(lengths.tolist()):
        assert torch.allclose(got[b, :n], expected[b, :n], atol=1e-5)
