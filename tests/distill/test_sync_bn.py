import copy

import torch
import torch.distributed as dist
from torch import nn

from fastdiode.distill.sync_bn import AllReduceBatchNorm2d, convert_sync_batchnorm


def test_all_reduce_batchnorm_equals_batchnorm_in_one_process(tmp_path):
    dist.init_process_group("gloo", init_method=f"file://{tmp_path / 'pg'}", rank=0, world_size=1)
    try:
        torch.manual_seed(0)
        ref = nn.Sequential(nn.Conv2d(3, 8, 3), nn.BatchNorm2d(8), nn.Sequential(nn.BatchNorm2d(8)))
        with torch.no_grad():
            for m in ref.modules():
                if isinstance(m, nn.BatchNorm2d):
                    m.weight.uniform_(0.5, 1.5)
                    m.bias.uniform_(-0.5, 0.5)
        sync = convert_sync_batchnorm(copy.deepcopy(ref), torch.device("cpu"))
        assert sum(isinstance(m, AllReduceBatchNorm2d) for m in sync.modules()) == 2
        x = torch.randn(4, 3, 9, 7)
        for model in (ref, sync):
            model.train()
            model(x).square().mean().backward()
        torch.testing.assert_close(sync(x), ref(x), rtol=1e-4, atol=1e-5)
        for (name, a), b in zip(ref.named_parameters(), sync.parameters()):
            torch.testing.assert_close(b.grad, a.grad, rtol=1e-4, atol=1e-6, msg=name)
        for (name, a), b in zip(ref.named_buffers(), sync.buffers()):
            torch.testing.assert_close(b.float(), a.float(), rtol=1e-4, atol=1e-6, msg=name)
        sync.eval(), ref.eval()
        torch.testing.assert_close(sync(x), ref(x))
    finally:
        dist.destroy_process_group()
